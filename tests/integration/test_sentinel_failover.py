"""A Sentinel-managed Redis fails over under load: the service follows the new master by itself.

A primary, a replica and three Sentinels, two service processes on
`redis+sentinel://.../<master name>`, uploads running in client threads while the primary is
killed (SIGKILL) and the Sentinels promote the replica. Replication is asynchronous: the last
writes the primary acknowledged may not have reached the replica, so a client may find its
session behind where it was (it resumes from the offset reported) or gone (it starts again).
"""

from __future__ import annotations

import time

from .harness import Launcher, SentinelServer, wait_for
from .resilient import ResilientUploader, check_every_file, finish

MiB = 1024 * 1024
MASTER = "files-test"


def test_the_service_follows_a_failover_by_itself(launcher: Launcher, services) -> None:
    primary = launcher.redis()
    replica = launcher.redis(replica_of=primary.port)
    sentinels = [launcher.sentinel(MASTER, primary.port, quorum=2) for _ in range(3)]
    wait_for(lambda: all(sentinel.sees(3, replicas=1) for sentinel in sentinels), 30, "the Sentinels to know all")
    addresses = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
    processes = services.start_many(2, redis_url=f"redis+sentinel://{addresses}/{MASTER}/0")

    uploaders = [
        ResilientUploader(processes, f"client-{n}", count=8, size=MiB + n, chunk=64 * 1024).start() for n in range(4)
    ]
    wait_for(lambda: sum(uploader.acknowledged for uploader in uploaders) >= 8, 30, "uploads to be under way")
    primary.kill()
    killed = time.monotonic()
    assert all(uploader.running() for uploader in uploaders), "the uploads ended before the failover"
    wait_for(lambda: promoted(sentinels, replica.port), 30, "the Sentinels to promote the replica")
    promoted_at = time.monotonic()

    finish(uploaders)
    attempts = [attempt for uploader in uploaders for attempt in uploader.attempts]
    assert {attempt.status for attempt in attempts} <= {200, 404, 409, 503}, attempts
    assert {attempt.code for attempt in attempts if attempt.status == 503} <= {"unavailable"}
    assert {attempt.code for attempt in attempts if attempt.status == 404} <= {"session_not_found"}
    # Only the requests in flight while no master was known fail: Lua scripts too work on the new one.
    assert all(attempt.began < promoted_at for attempt in attempts if attempt.status == 503), attempts
    check_every_file(uploaders, processes)
    for process in processes:
        process.check_alive()
    assert promoted_at - killed < 30


def promoted(sentinels: list[SentinelServer], port: int) -> bool:
    return all(sentinel.master_port() == port for sentinel in sentinels)
