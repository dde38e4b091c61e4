"""Parts and their concatenation in the upload core (UploadCore.concatenate), without HTTP.

On fakeredis and a real Redis (the part flag and the recorded parts go through the session
store's scripts), with staged uploads in memory and on the data volume (each store assembles
the parts its own way).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import threading
from collections.abc import Iterator

import pytest
from blake3 import blake3
from conftest import on_both_redises

from service.config import Settings
from service.core.auth import Principal
from service.core.digests import Digests
from service.core.errors import (
    DigestMismatch,
    FileNotFound,
    Forbidden,
    InvalidConcatenation,
    InvalidRequest,
    SessionBusy,
    SessionCompleted,
    SessionNotFound,
)
from service.core.model import Entry, NewUpload, Session
from service.redis.keyspace import KeySpace
from service.services import Services

pytestmark = [pytest.mark.anyio, on_both_redises]

WRITER = Principal("writer", {"b": frozenset({"read", "write", "delete"}), "c": frozenset({"write"})})
OTHER = Principal("other", {"b": frozenset({"read", "write", "delete"})})
WRITER_OF_B = Principal("writer", {"b": frozenset({"read", "write", "delete"})})  # the token, its grant on c revoked
KiB = 1024


@pytest.fixture(params=["memory", "files"])
async def services(request: pytest.FixtureRequest, settings: Settings, connect_redis) -> Services:
    return Services.build(settings, connect_redis(), in_memory=request.param == "memory")


async def body(*chunks: bytes):
    for chunk in chunks:
        await asyncio.sleep(0)  # let the other writers run between chunks
        yield chunk


async def new_part(services: Services, size: int | None, principal: Principal = WRITER, bucket: str = "b") -> Session:
    created = await services.core.create(
        NewUpload(bucket, "parts", "application/octet-stream", size, part=True), principal, "t"
    )
    assert created.file is None
    return created.session


async def write_part(
    services: Services, content: bytes, principal: Principal = WRITER, chunk: int = 7 * KiB, bucket: str = "b"
) -> str:
    part = await new_part(services, len(content), principal, bucket)
    chunks = [content[first : first + chunk] for first in range(0, len(content), chunk)]
    result = await services.core.write(part.id, principal, body(*chunks), upload_offset=0, content_length=len(content))
    assert isinstance(result, Session) and result.completed
    return part.id


async def new_final(
    services: Services, size: int | None, key: str = "final", digest: str | None = None, principal: Principal = WRITER
) -> Session:
    upload = NewUpload("b", key, "text/plain", size, digest=digest, metadata={"filename": "f.txt"})
    return (await services.core.create(upload, principal, "t")).session


async def read(services: Services, entry: Entry) -> bytes:
    return b"".join([chunk async for chunk in services.files.content(entry, 0, entry.bytes, whole=True)])


async def staged(services: Services, name: str) -> int | None:
    return await asyncio.to_thread(services.staging.length, name)


async def test_parts_written_at_once_are_joined_in_the_order_named_not_written(services):
    contents = [os.urandom(size) for size in (50 * KiB + 3, 1, 64 * KiB, 20 * KiB + 11)]
    # Written concurrently, chunk by chunk interleaved; the last one finishes first (it is named first).
    ids = await asyncio.gather(*(write_part(services, content) for content in contents))
    order = [3, 0, 2, 1]
    final = await new_final(services, None)
    entry = await services.core.concatenate(final.id, [ids[i] for i in order], WRITER)
    whole = b"".join(contents[i] for i in order)
    assert entry.bytes == len(whole) and entry.digest == blake3(whole).hexdigest()
    assert (entry.bucket, entry.key, entry.mime_type, entry.metadata) == (
        "b",
        "final",
        "text/plain",
        {"filename": "f.txt"},
    )
    assert await read(services, entry) == whole
    done = await services.core.status(final.id, WRITER)
    assert done.completed and done.size == len(whole) and done.parts == tuple(ids[i] for i in order)
    for part_id in ids:  # the parts are gone once the final is committed
        with pytest.raises(SessionNotFound):
            await services.core.status(part_id, WRITER)
        assert await staged(services, part_id) is None
    assert await staged(services, final.id) is None


async def test_a_final_of_a_known_size_takes_only_parts_adding_up_to_it(services):
    ids = [await write_part(services, b"a" * 10), await write_part(services, b"b" * 5)]
    final = await new_final(services, 16)
    with pytest.raises(InvalidConcatenation, match="15 bytes"):
        await services.core.concatenate(final.id, ids, WRITER)
    third = await write_part(services, b"c")
    entry = await services.core.concatenate(final.id, [*ids, third], WRITER)  # nothing was consumed
    assert await read(services, entry) == b"a" * 10 + b"b" * 5 + b"c"


async def test_parts_that_are_unknown_or_another_tokens_do_not_exist(services):
    mine = await write_part(services, b"mine")
    theirs = await write_part(services, b"theirs", principal=OTHER)
    final = await new_final(services, None)
    for ids in ([mine, "0" * 32], [mine, theirs]):
        with pytest.raises(SessionNotFound):
            await services.core.concatenate(final.id, ids, WRITER)
    with pytest.raises(SessionNotFound):  # nor is another token's final upload
        await services.core.concatenate(final.id, [theirs], OTHER)
    entry = await services.core.concatenate(final.id, [mine], WRITER)
    assert await read(services, entry) == b"mine"
    assert (await services.core.status(theirs, OTHER)).completed  # untouched


async def test_a_part_needs_write_on_its_bucket(services):
    with pytest.raises(Forbidden):
        await new_part(services, 3, WRITER_OF_B, bucket="c")
    in_c = await write_part(services, b"abc", bucket="c")
    final = await new_final(services, None)
    with pytest.raises(Forbidden):
        await services.core.concatenate(final.id, [in_c], WRITER_OF_B)
    entry = await services.core.concatenate(final.id, [in_c], WRITER)
    assert await read(services, entry) == b"abc"


async def test_incomplete_repeated_or_ordinary_uploads_are_no_parts_to_join(services):
    complete = await write_part(services, b"done")
    incomplete = await new_part(services, 10)
    await services.core.write(incomplete.id, WRITER, body(b"half"), upload_offset=0, content_length=4)
    ordinary = await new_final(services, 3, key="ordinary")
    final = await new_final(services, None)
    cases = {
        "is not complete (4 of 10 bytes)": [complete, incomplete.id],
        "is named twice": [complete, complete],
        "is not a part": [complete, ordinary.id],
        "at least one part": [],
        "part of itself": [complete, final.id],
    }
    for message, ids in cases.items():
        with pytest.raises(InvalidConcatenation, match=re.escape(message)):
            await services.core.concatenate(final.id, ids, WRITER)
    with pytest.raises(InvalidConcatenation, match="cannot be a final"):
        await services.core.concatenate(incomplete.id, [complete], WRITER)
    with pytest.raises(InvalidRequest, match="md5"):
        await services.core.concatenate(final.id, [complete], WRITER, md5="not hex")
    assert (await services.core.status(complete, WRITER)).completed
    entry = await services.core.concatenate(final.id, [complete], WRITER)
    assert await read(services, entry) == b"done"


async def test_an_md5_mismatch_consumes_nothing_and_the_right_parts_complete_it(services):
    *ids, wrong_id = [await write_part(services, content) for content in (b"hello ", b"world", b"there")]
    final = await new_final(services, None)
    right_md5 = hashlib.md5(b"hello world").hexdigest()
    with pytest.raises(DigestMismatch, match="md5"):
        await services.core.concatenate(final.id, [ids[0], wrong_id], WRITER, md5=right_md5)
    session = await services.core.status(final.id, WRITER)
    assert not session.completed and session.offset == 0 and session.length_deferred
    assert await staged(services, final.id) is None
    for part_id in (*ids, wrong_id):
        assert (await services.core.status(part_id, WRITER)).completed
        assert await staged(services, part_id) is not None
    entry = await services.core.concatenate(final.id, ids, WRITER, md5=right_md5.upper())
    assert await read(services, entry) == b"hello world"
    assert (await services.core.status(wrong_id, WRITER)).completed  # a part not named stays


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
async def test_the_finals_own_digest_is_checked_once_over_the_whole(services, algorithm):
    content = os.urandom(40 * KiB)
    ids = [await write_part(services, content[:1000]), await write_part(services, content[1000:])]
    hashes = {"blake3": blake3, "sha256": hashlib.sha256}
    bad = await new_final(services, len(content), key="bad", digest=f"{algorithm}:{'0' * 64}")
    with pytest.raises(DigestMismatch, match=algorithm):
        await services.core.concatenate(bad.id, ids, WRITER)
    good = await new_final(services, len(content), digest=f"{algorithm}:{hashes[algorithm](content).hexdigest()}")
    entry = await services.core.concatenate(good.id, ids, WRITER)
    assert await read(services, entry) == content


async def test_a_concatenated_content_stored_already_is_deduplicated(services):
    content = os.urandom(30 * KiB)
    whole = (await services.core.create(NewUpload("b", "whole", "text/plain", len(content)), WRITER, "t")).session
    existing = await services.core.write(whole.id, WRITER, body(content), upload_offset=0, content_length=len(content))
    assert isinstance(existing, Entry)
    ids = [await write_part(services, content[:100]), await write_part(services, content[100:])]
    final = await new_final(services, len(content))
    entry = await services.core.concatenate(final.id, ids, WRITER)
    assert entry.digest == existing.digest
    assert [blob.digest for blob in await asyncio.to_thread(lambda: list(services.blobs.list()))] == [entry.digest]
    assert await read(services, entry) == content


async def test_a_commit_cut_short_is_completed_by_the_retry_and_the_parts_wait_for_it(services, monkeypatch):
    ids = [await write_part(services, b"abc"), await write_part(services, b"def")]
    final = await new_final(services, None)
    real_commit = services.catalog.commit

    async def failing(entry: Entry, staged: str) -> None:
        raise ConnectionError("the process died here")

    monkeypatch.setattr(services.catalog, "commit", failing)
    with pytest.raises(ConnectionError):
        await services.core.concatenate(final.id, ids, WRITER)
    session = await services.core.status(final.id, WRITER)
    assert (session.offset, session.size, session.parts, session.completed) == (6, 6, tuple(ids), False)
    assert all([(await services.core.status(part_id, WRITER)).completed for part_id in ids])
    with pytest.raises(InvalidConcatenation, match="6 bytes of its own"):  # other parts cannot take it over
        await services.core.concatenate(final.id, ids[:1], WRITER)
    monkeypatch.setattr(services.catalog, "commit", real_commit)
    entry = await services.core.concatenate(final.id, ids, WRITER)
    assert await read(services, entry) == b"abcdef"
    with pytest.raises(SessionCompleted):
        await services.core.concatenate(final.id, ids, WRITER)


async def test_a_part_of_unknown_length_completes_when_its_size_is_declared(services):
    part = await new_part(services, None)
    result = await services.core.write(part.id, WRITER, body(b"xyz"), upload_offset=0, content_length=3)
    assert isinstance(result, Session) and not result.completed
    result = await services.core.write(part.id, WRITER, body(), upload_offset=3, content_length=0, size=3)
    assert isinstance(result, Session) and result.completed
    created = await services.core.create(NewUpload("b", "p", "text/plain", 0, part=True), WRITER, "t")
    empty = created.session
    assert created.file is None and empty.completed  # a part of size 0 is complete at once, with no file
    final = await new_final(services, None)
    joined = await services.core.concatenate(final.id, [empty.id, part.id], WRITER)
    assert await read(services, joined) == b"xyz"


async def test_an_expired_part_is_swept_and_cannot_be_joined(services, redis, settings):
    expired = await write_part(services, b"gone")
    kept = await write_part(services, b"kept")
    await redis.delete(KeySpace(settings.redis_prefix).session(expired))  # what its expiry leaves
    assert await services.sweeper.sweep_staging() == 1
    assert await staged(services, expired) is None and await staged(services, kept) == 4
    final = await new_final(services, None)
    with pytest.raises(SessionNotFound):
        await services.core.concatenate(final.id, [kept, expired], WRITER)
    assert (await services.core.status(kept, WRITER)).completed


async def test_cancelling_a_complete_part_removes_its_bytes(services):
    part = await write_part(services, b"abc")
    await services.core.cancel(part, WRITER)
    assert await staged(services, part) is None
    with pytest.raises(SessionNotFound):
        await services.core.status(part, WRITER)


async def test_another_tokens_part_answers_as_an_unknown_one_whatever_the_other_parts(services):
    incomplete = await new_part(services, 10)
    theirs = await write_part(services, b"theirs", principal=OTHER)
    final = await new_final(services, None)
    for ids in ([incomplete.id, "0" * 32], [incomplete.id, theirs]):  # the same error, not "not complete"
        with pytest.raises(SessionNotFound):
            await services.core.concatenate(final.id, ids, WRITER)


async def test_another_tokens_sessions_busy_or_completed_do_not_exist(services):
    theirs = await new_final(services, 3, principal=OTHER)
    done = await write_part(services, b"abc", principal=OTHER)
    _, lease = await services.sessions.begin_write(theirs.id)  # a write of theirs under way
    try:
        for session_id in (theirs.id, done):
            with pytest.raises(SessionNotFound):
                await services.core.write(session_id, WRITER, body(b"x"), upload_offset=0, content_length=1)
            with pytest.raises(SessionNotFound):
                await services.core.concatenate(session_id, [await write_part(services, b"x")], WRITER)
            with pytest.raises(SessionNotFound):
                await services.core.cancel(session_id, WRITER)
    finally:
        await lease.release()
    assert (await services.core.status(done, OTHER)).completed


@contextlib.contextmanager
def paused_hashing(services: Services, final: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold the concatenation of `final` after it copied its parts, before it hashes them, until the
    event it yields is set (by the end of the block at the latest); waits for it to get there."""
    arrived, resume = threading.Event(), threading.Event()
    real = services.staging.digests

    def digests(name: str, *args: bool) -> Digests:
        if name == final.id:
            arrived.set()
            assert resume.wait(30), "the test never let the concatenation go on"
        return real(name, *args)

    monkeypatch.setattr(services.staging, "digests", digests)
    try:
        yield arrived
    finally:
        resume.set()


async def test_a_part_goes_into_one_final_only(services, monkeypatch):
    ids = [await write_part(services, b"abc"), await write_part(services, b"def")]
    first, second = await new_final(services, None, key="first"), await new_final(services, None, key="second")
    with paused_hashing(services, first, monkeypatch) as arrived:
        assembling = asyncio.create_task(services.core.concatenate(first.id, ids, WRITER))
        assert await asyncio.to_thread(arrived.wait, 30)
        with pytest.raises(SessionBusy):
            await services.core.concatenate(second.id, ids[::-1], WRITER)
    assert await read(services, await assembling) == b"abcdef"
    with pytest.raises(FileNotFound):
        await services.files.info(WRITER, "b", "second")
    with pytest.raises(SessionNotFound):  # the parts went into the first
        await services.core.concatenate(second.id, ids, WRITER)
    assert not (await services.core.status(second.id, WRITER)).completed


async def test_a_part_being_assembled_cannot_be_cancelled(services, monkeypatch):
    ids = [await write_part(services, b"abc"), await write_part(services, b"def")]
    final = await new_final(services, None)
    with paused_hashing(services, final, monkeypatch) as arrived:
        assembling = asyncio.create_task(services.core.concatenate(final.id, ids, WRITER))
        assert await asyncio.to_thread(arrived.wait, 30)
        with pytest.raises(SessionBusy):
            await services.core.cancel(ids[1], WRITER)
    assert await read(services, await assembling) == b"abcdef"
    with pytest.raises(SessionNotFound):
        await services.core.cancel(ids[1], WRITER)


async def test_a_part_takes_no_digest_since_nothing_would_check_it(services):
    """A part is hashed only with the others, as the final upload's content."""
    with pytest.raises(InvalidRequest, match="final upload"):
        await services.core.create(
            NewUpload("b", "p", "text/plain", 3, digest=f"blake3:{blake3(b'abc').hexdigest()}", part=True), WRITER, "t"
        )


async def test_a_final_expiring_while_it_assembles_consumes_nothing(services, monkeypatch, redis, settings):
    ids = [await write_part(services, b"abc"), await write_part(services, b"def")]
    final = await new_final(services, None)
    with paused_hashing(services, final, monkeypatch) as arrived:
        assembling = asyncio.create_task(services.core.concatenate(final.id, ids, WRITER))
        assert await asyncio.to_thread(arrived.wait, 30)
        await redis.delete(KeySpace(settings.redis_prefix).session(final.id))  # what its expiry leaves
    with pytest.raises(SessionNotFound):
        await assembling
    with pytest.raises(FileNotFound):
        await services.files.info(WRITER, "b", "final")
    assert await services.sweeper.sweep_staging() == 1  # the assembled copy, left to the sweep
    again = await new_final(services, None, key="again")
    assert await read(services, await services.core.concatenate(again.id, ids, WRITER)) == b"abcdef"
