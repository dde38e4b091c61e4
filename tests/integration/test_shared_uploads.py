"""Several processes on one Redis and one data directory serve the same uploads."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import MiB, assert_content, b3, expect, pieces, wait_for

CHUNK = 256 * 1024 + 3


def test_alternate_chunks_across_two_processes(services) -> None:
    a, b = services.start_many(2)
    content = os.urandom(6 * CHUNK + 1234)
    bucket, key = "shared", "nested/dir/file.bin"
    session_id = a.api.create(bucket, key, len(content), mime_type="application/x-test")["id"]
    chunks = pieces(content, CHUNK)

    offset, result = 0, {}
    for number, piece in enumerate(chunks):
        writer, other = (a, b) if number % 2 == 0 else (b, a)
        last = number == len(chunks) - 1
        # The last chunk goes without Upload-Offset: it then starts at the session's offset.
        result = writer.api.chunk(session_id, piece, offset=None if last else offset)
        offset += len(piece)
        if not last:
            assert result["offset"] == offset
            assert other.api.offset(session_id) == offset
            # A stale offset on the other process: 409 with the current one, nothing stored.
            stale = expect(other.api.send(session_id, b"junk", offset=offset - 1), 409).json()
            assert stale["offset"] == offset

    assert result["bytes"] == len(content)
    assert result["digest"] == f"blake3:{b3(content)}"
    for process in (a, b):
        assert_content(process.api.content(bucket, key), content)
        assert process.api.content(bucket, key).headers["content-type"] == "application/x-test"
        assert bucket in process.api.buckets()
        [listed] = process.api.files(bucket)
        assert (listed["key"], listed["bytes"], listed["digest"]) == (key, len(content), f"blake3:{b3(content)}")
        assert expect(process.api.info(bucket, key), 200).json()["digest"] == f"blake3:{b3(content)}"
        assert process.api.offset(session_id) == len(content)


@pytest.mark.parametrize("second_writer", ["other process", "same process"])
def test_second_writer_gets_409_at_once(services, data_dir, second_writer: str) -> None:
    # A long lease, so that the first writer, paused by the test, cannot lose its lock meanwhile.
    a, b = services.start_many(2, FILES_LOCK_LEASE_SECONDS="10")
    second = b if second_writer == "other process" else a
    content = os.urandom(3 * MiB + 7)
    session_id = a.api.create("race", "one-winner.bin", len(content))["id"]
    holding, release = threading.Event(), threading.Event()

    def paused_body():
        yield content[:MiB]
        holding.set()
        if not release.wait(timeout=30):
            raise RuntimeError("the test never released the first writer")
        yield content[MiB:]

    with ThreadPoolExecutor(1) as pool, a.client() as first_client:
        first = pool.submit(first_client.send, session_id, paused_body(), 0)
        try:
            holding.wait(timeout=10)
            # The staging file is created once the first writer holds the session.
            wait_for((data_dir / "partial" / session_id).exists, 10, "the first writer to start writing")
            started = time.monotonic()
            refused = second.api.send(session_id, content, offset=0)
            elapsed = time.monotonic() - started
            assert not first.done(), "the first writer must still be sending when the second is refused"
        finally:
            release.set()
        winner = first.result(timeout=60)

    expect(refused, 409)
    assert refused.json()["detail"]
    assert elapsed < 1.0, f"the second writer waited {elapsed:.2f} s for its 409"
    assert expect(winner, 200).json()["digest"] == f"blake3:{b3(content)}"
    for process in (a, b):
        assert_content(process.api.content("race", "one-winner.bin"), content)
    # The session is complete now: a late writer gets 409 too, and the content stays.
    expect(second.api.send(session_id, content[:10]), 409)
    assert_content(second.api.content("race", "one-winner.bin"), content)
