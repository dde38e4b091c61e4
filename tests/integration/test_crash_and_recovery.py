"""What survives: a process killed (SIGKILL) or stopped (SIGTERM) mid-chunk, and Redis losing its data or going away."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from .harness import MiB, UnexpectedStatus, assert_content, b3, expect, resume, streaming_second_chunk, wait_for

LEASE_SECONDS = 2  # FILES_LOCK_LEASE_SECONDS of the harness
GRACE_SECONDS = 1


def interrupted_upload(services, data_dir, interrupt, graceful: bool) -> None:
    """Chunk 1 acknowledged; chunk 2 streams in slowly until `interrupt(process)` ends the process.

    Then a fresh process reports an offset that covers chunk 1 and what was checkpointed of
    chunk 2, and the upload completes from there with exact content. After a graceful stop
    everything that arrived is kept and no lock is left behind; after SIGKILL the dead
    process's lock holds the session until its lease runs out.
    """
    victim = services.start(name="victim")
    content = os.urandom(8 * MiB + 333)
    first_chunk = MiB + 17
    with streaming_second_chunk(victim, content, first_chunk, 15) as (session_id, upload, checkpoint):
        assert upload.running(), "the slow chunk must still be streaming when the service goes"
        interrupt(victim)
        upload.stop()
        outcome = upload.outcome()
    if isinstance(outcome, httpx.Response):
        assert outcome.status_code >= 400, f"an incomplete chunk got {outcome.status_code}"

    fresh = services.start(name="fresh")
    resumed_at = fresh.api.offset(session_id)
    assert first_chunk < checkpoint <= resumed_at < len(content)
    held = (data_dir / "partial" / session_id).stat().st_size
    if graceful:
        assert held == resumed_at, f"{held} bytes arrived and are on disk, but the offset is {resumed_at}"
        done = fresh.api.chunk(session_id, content[resumed_at:], offset=resumed_at)
    else:
        assert held >= resumed_at
        done = resume(fresh, session_id, content, LEASE_SECONDS + 10)
    assert done["digest"] == f"blake3:{b3(content)}"
    assert_content(fresh.api.content("crash", "resumed.bin"), content)


def test_kill_9_mid_chunk_then_resume_on_a_fresh_process(services, data_dir) -> None:
    interrupted_upload(services, data_dir, lambda process: process.kill(), graceful=False)


def test_sigterm_mid_chunk_stops_within_the_grace_period_and_keeps_what_arrived(services, data_dir) -> None:
    def terminate(process) -> None:
        process.terminate()
        assert process.wait_exit(GRACE_SECONDS + 10) in (0, -signal.SIGTERM)

    services = services.with_env(FILES_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    interrupted_upload(services, data_dir, terminate, graceful=True)


def upload_fixtures(services_by_turn) -> dict[tuple[str, str], bytes]:
    files = {
        ("alpha", "one.txt"): b"hello, world\n",
        ("alpha", "deep/er/two.bin"): os.urandom(300_000),
        ("beta-2", "empty"): b"",
        ("gamma_3", "big.bin"): os.urandom(2 * MiB + 5),
    }
    for turn, ((bucket, key), content) in enumerate(files.items()):
        services_by_turn[turn % len(services_by_turn)].api.upload(bucket, key, content, chunk_size=MiB)
    return files


def expected_listing(files: dict[tuple[str, str], bytes]) -> dict[str, list[str]]:
    listing: dict[str, list[str]] = {}
    for bucket, key in sorted(files):
        listing.setdefault(bucket, []).append(key)
    return listing


@pytest.mark.parametrize("loss", ["flushall", "restart"])
def test_completed_files_survive_redis_losing_its_data(services, own_redis, loss: str) -> None:
    processes = services.start_many(2, redis_url=own_redis.url)
    files = upload_fixtures(processes)
    expected = expected_listing(files)
    assert processes[0].api.listing() == expected

    # A key of the test's own shows the loss: the services write keys of theirs again at once (a sweep, the
    # rebuild), so the database's size may already be above 0 when the test looks.
    own_redis.client().set("test:before-the-loss", "1")
    if loss == "flushall":
        own_redis.client().flushall()
    else:
        own_redis.restart()
    assert not own_redis.client().exists("test:before-the-loss")

    for process in processes:
        wait_for(
            lambda process=process: process.api.listing() == expected,
            30,
            f"{process.name} to list every file again after Redis lost its data ({loss})",
            ignore=(UnexpectedStatus, httpx.TransportError),
        )
        for (bucket, key), content in files.items():
            assert_content(process.api.content(bucket, key), content)
            assert expect(process.api.info(bucket, key), 200).json()["bytes"] == len(content)

    # And the service goes on: a new file is stored and listed by both.
    late = os.urandom(100_000)
    processes[1].api.upload("alpha", "late.bin", late, chunk_size=64 * 1024)
    for process in processes:
        assert "late.bin" in process.api.keys("alpha")
        assert_content(process.api.content("alpha", "late.bin"), late)


def test_readyz_follows_redis(services, own_redis) -> None:
    service = services.start(redis_url=own_redis.url)
    expect(service.api.http.get("/readyz"), 200)

    own_redis.kill()
    not_ready = wait_for(
        lambda: (response := service.api.http.get("/readyz")).status_code == 503 and response,
        15,
        "/readyz to answer 503 once Redis is gone",
    )
    assert "redis" in not_ready.json()["detail"].lower()
    expect(service.api.http.get("/healthz"), 200)

    own_redis.start()
    wait_for(lambda: service.api.http.get("/readyz").status_code == 200, 20, "/readyz to answer 200 again")
