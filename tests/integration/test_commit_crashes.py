"""A service process killed at each step of a commit (FILES_TEST_CRASH_AT): a fresh one converges.

With no request on the key, within a minute: the file is wholly there (listed, info, downloaded
byte for byte, counted once, its blob kept) or wholly absent (its blob freed), and storing the
same content under another key and deleting that key never breaks it.
"""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from service.redis.keyspace import KeySpace

from .harness import MiB, assert_content, b3, expect, resume, wait_for

# How the victim ends: it exits 137 at a crash point of its own, and is killed by SIGKILL at one that a
# writer process of its reaches (service/core/crashpoints.py).
KILLED = (137, -signal.SIGKILL)
LEASE_SECONDS = 2  # FILES_LOCK_LEASE_SECONDS of the harness
CONVERGE_SECONDS = 60
# Where the process dies, and whether the file is there afterwards.
CRASH_POINTS = {
    "blob-placed": False,
    "entry-written": True,
    "change-indexed": True,
    "outbox-applied": True,
    "index-updated": True,
    "committed": True,
}


def blob(data_dir, content: bytes):
    digest = b3(content)
    return data_dir / "blobs" / digest[:2] / digest[2:4] / digest


def references(redis_server, prefix: str, content: bytes) -> int:
    with redis_server.client() as client:
        keys = KeySpace(prefix)
        return sum(
            int(client.scard(keys.refs(b3(content), bucket))) for bucket in client.smembers(keys.holders(b3(content)))
        )


def state(api, data_dir, redis_server, prefix: str, content: bytes) -> tuple[bool, bool, int, bool, int]:
    """(listed, info answers, download status, blob on disk, references counted)."""
    listed = "k" in api.keys("crash")
    info = api.info("crash", "k").status_code == 200
    download = api.content("crash", "k").status_code
    return listed, info, download, blob(data_dir, content).exists(), references(redis_server, prefix, content)


@pytest.mark.parametrize("point", CRASH_POINTS)
@pytest.mark.parametrize("size", [1000, 2 * MiB + 3], ids=["small", "large"])
def test_a_commit_killed_at_each_step_converges(services, own_redis, data_dir, redis_prefix, point, size) -> None:
    content = os.urandom(size)
    victim = services.start(own_redis.url, name="victim", FILES_TEST_CRASH_AT=point)
    session_id = victim.api.create("crash", "k", len(content))["id"]
    with pytest.raises(httpx.TransportError):
        victim.api.send(session_id, content, offset=0)
    assert victim.wait_exit(10) in KILLED
    assert blob(data_dir, content).exists(), "the process died before the commit placed its blob"

    fresh = services.start(own_redis.url, name="fresh")
    if CRASH_POINTS[point]:
        whole = (True, True, 200, True, 1)
        wait_for(lambda: state(fresh.api, data_dir, own_redis, redis_prefix, content) == whole, CONVERGE_SECONDS,
                 "the file to be listed, downloadable and counted")  # fmt: skip
        assert_content(fresh.api.content("crash", "k"), content)
    else:
        gone = (False, False, 404, False, 0)
        wait_for(lambda: state(fresh.api, data_dir, own_redis, redis_prefix, content) == gone, CONVERGE_SECONDS,
                 "the file to be wholly absent and its blob freed")  # fmt: skip

    fresh.api.upload("crash", "other", content)
    expect(fresh.api.delete("crash", "other"), 200)
    if CRASH_POINTS[point]:
        assert_content(fresh.api.content("crash", "k"), content)
        # The other key's reference ends when its bucket's outbox is applied: at once, or once the lease of a
        # process killed while applying it runs out.
        wait_for(lambda: references(own_redis, redis_prefix, content) == 1, CONVERGE_SECONDS, "one reference left")
    else:
        wait_for(lambda: not blob(data_dir, content).exists(), CONVERGE_SECONDS, "the other key's blob to be freed")
    with own_redis.client() as client:
        assert client.hlen(KeySpace(redis_prefix).intents("crash")) == 0
        wait_for(lambda: client.llen(KeySpace(redis_prefix).outbox("crash")) == 0, CONVERGE_SECONDS, "the outbox")
        events = [fields for _, fields in client.xrange(KeySpace(redis_prefix).events) if fields["key"] == "k"]
    # Never an event without its change, nor a change without its event; one killed after appending it
    # and before clearing its outbox gives it twice (at least once).
    assert {fields["type"] for fields in events} == ({"file.created"} if CRASH_POINTS[point] else set())
    assert len(events) == (2 if point == "outbox-applied" else 1 if CRASH_POINTS[point] else 0)


@pytest.mark.parametrize("point", ["blob-placed", "entry-written"])
def test_the_retry_of_the_completing_request_succeeds_once_the_dead_workers_lease_runs_out(
    services, own_redis, data_dir, point
) -> None:
    content = os.urandom(3 * MiB + 1)
    victim = services.start(own_redis.url, name="victim", FILES_TEST_CRASH_AT=point)
    session_id = victim.api.create("crash", "k", len(content))["id"]
    with pytest.raises(httpx.TransportError):
        victim.api.send(session_id, content, offset=0)
    victim.wait_exit(10)

    fresh = services.start(own_redis.url, name="fresh")
    done = resume(fresh, session_id, content, LEASE_SECONDS + 30)
    assert done["digest"] == f"blake3:{b3(content)}"
    assert_content(fresh.api.content("crash", "k"), content)
    wait_for(lambda: fresh.api.keys("crash") == ["k"], CONVERGE_SECONDS, "the file to be listed")


@pytest.mark.parametrize("point", ["blob-placed", "committed"])
def test_a_concatenation_killed_mid_commit_is_completed_by_the_retry_from_the_same_parts(
    services, own_redis, data_dir, redis_prefix, point
) -> None:
    """The parts go only after the final upload is committed: a tus client's retry of the final
    POST, on a fresh process, finds them all and makes the file (once, whatever the first one did),
    once the dead process's hold on them has run out (409 until then, which tus clients retry)."""
    pieces = [os.urandom(MiB + 5), os.urandom(1000), os.urandom(2 * MiB)]
    tus = {"Tus-Resumable": "1.0.0"}
    partial = {**tus, "Upload-Concat": "partial", "Content-Type": "application/offset+octet-stream"}
    victim = services.start(own_redis.url, name="victim", FILES_TEST_CRASH_AT=point)
    parts = []
    for piece in pieces:  # parts complete without a commit: the crash point is not on their way
        created = httpx.post(
            f"{victim.base_url}/tus/", content=piece, headers={**partial, "Upload-Length": str(len(piece))}
        )
        assert created.status_code == 201 and created.headers["upload-offset"] == str(len(piece))
        parts.append(httpx.URL(created.headers["location"]).path)
    final = {**tus, "Upload-Concat": "final;" + " ".join(parts), "Upload-Metadata": "bucket Y3Jhc2g=,key aw=="}
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{victim.base_url}/tus/", headers=final)
    assert victim.wait_exit(10) in KILLED

    fresh = services.start(own_redis.url, name="fresh")

    def retried() -> httpx.Response | None:
        response = httpx.post(f"{fresh.base_url}/tus/", headers=final)
        return None if response.status_code == 409 else response  # the dead one's hold on the parts

    expect(wait_for(retried, CONVERGE_SECONDS, "the dead process's leases on the parts to run out"), 201)
    whole = b"".join(pieces)
    assert_content(fresh.api.content("crash", "k"), whole)
    for part in parts:  # consumed by the retry
        assert httpx.head(f"{fresh.base_url}{part}", headers=tus).status_code == 404
        assert not (data_dir / "partial" / part.rsplit("/", 1)[1]).exists()
    with own_redis.client() as client:
        wait_for(
            lambda: client.hlen(KeySpace(redis_prefix).intents("crash")) == 0,
            CONVERGE_SECONDS,
            "the dead commit to be settled",
        )
    assert references(own_redis, redis_prefix, whole) == 1
    assert_content(fresh.api.content("crash", "k"), whole)
