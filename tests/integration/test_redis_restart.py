"""A plain Redis killed and restarted under load: only the requests in flight fail, with 503, and no upload is lost.

Redis runs with an append-only file written before each reply, so the restarted server holds every
session and offset it acknowledged: the uploads resume from the offset the service reports (without
persistence the sessions would be gone and the clients would start again; the contract allows
that, this test checks the stricter case). The restarted server has no Lua script cached: the
service loads each again when Redis answers NOSCRIPT.
"""

from __future__ import annotations

import time

from .harness import Launcher, wait_for
from .resilient import ResilientUploader, check_every_file, finish

MiB = 1024 * 1024


def test_a_redis_restart_costs_only_the_requests_in_flight(launcher: Launcher, services) -> None:
    redis = launcher.redis(persistent=True)
    processes = services.start_many(2, redis_url=redis.url)
    uploaders = [
        ResilientUploader(processes, f"client-{n}", count=8, size=MiB + n, chunk=64 * 1024).start() for n in range(4)
    ]
    wait_for(lambda: sum(uploader.acknowledged for uploader in uploaders) >= 8, 30, "uploads to be under way")

    assert all(uploader.running() for uploader in uploaders), "the uploads ended before the outage"
    redis.kill()
    outage_began = time.monotonic()
    # Down for longer than the service's retries ride out: the requests then in flight fail.
    wait_for(lambda: failures(uploaders), 30, "a request to fail while Redis is down")
    redis.start()  # on the same port, from its append-only file
    back = time.monotonic()

    finish(uploaders)
    attempts = [attempt for uploader in uploaders for attempt in uploader.attempts]
    failed = [attempt for attempt in attempts if attempt.status not in (200, 409)]
    assert failed, "no request failed: Redis was not down while they ran"
    assert {(attempt.status, attempt.code) for attempt in failed} == {(503, "unavailable")}, failed
    assert all(outage_began <= attempt.ended and attempt.began < back for attempt in failed), failed
    assert all(attempt.status in (200, 409) for attempt in attempts if attempt.began > back)
    assert sum(upload.restarts for uploader in uploaders for upload in uploader.uploads) == 0
    check_every_file(uploaders, processes)
    for process in processes:
        process.check_alive()


def failures(uploaders: list[ResilientUploader]) -> bool:
    return any(attempt.status == 503 for uploader in uploaders for attempt in uploader.attempts)
