"""The core's own rules, called without HTTP: names and permissions hold whichever front calls it."""

from __future__ import annotations

import fakeredis
import pytest

from service.config import Settings
from service.core.auth import Principal
from service.core.errors import FileNotFound, Forbidden, InvalidRequest, SessionNotFound, UploadTooLarge
from service.core.model import Entry, NewUpload, Session
from service.services import Services

pytestmark = pytest.mark.anyio

WRITER = Principal("writer", {"b": frozenset({"read", "write", "delete"})})
STRANGER = Principal("stranger", {"other": frozenset({"read", "write", "delete"})})


async def single_body(content: bytes):
    yield content


@pytest.fixture
async def services(settings: Settings, redis_server: fakeredis.FakeServer) -> Services:
    client = fakeredis.FakeAsyncRedis(server=redis_server, decode_responses=True)
    return Services.build(settings, client, in_memory=True)


@pytest.fixture
async def stored(services: Services) -> Entry:
    session = (await services.core.create(NewUpload("b", "k", "text/plain", 5), WRITER, "test")).session
    entry = await services.core.write(session.id, WRITER, single_body(b"hello"), upload_offset=0, content_length=5)
    assert isinstance(entry, Entry)
    return entry


async def read(services: Services, principal: Principal, bucket: str, key: str) -> bytes:
    entry = await services.files.download(principal, bucket, key)
    return b"".join([chunk async for chunk in services.files.content(entry, 0, entry.bytes, whole=True)])


async def test_the_owner_reads_lists_and_deletes(services, stored):
    assert await read(services, WRITER, "b", "k") == b"hello"
    assert await services.files.info(WRITER, "b", "k") == stored
    assert await services.files.page(WRITER, "b", "", None, 10) == ([stored], False)
    assert await services.files.buckets(WRITER) == ["b"]
    assert await services.files.delete(WRITER, "b", "k") == stored
    with pytest.raises(FileNotFound):
        await services.files.info(WRITER, "b", "k")


@pytest.mark.parametrize("action", ["info", "download", "delete", "page"])
async def test_every_file_action_checks_the_principal(services, stored, action):
    with pytest.raises(Forbidden):
        if action == "page":
            await services.files.page(STRANGER, "b", "", None, 10)
        else:
            await getattr(services.files, action)(STRANGER, "b", "k")
    assert await services.files.buckets(STRANGER) == []
    assert await services.files.info(WRITER, "b", "k") == stored


@pytest.mark.parametrize(("bucket", "key"), [("../..", "k"), ("b/..", "k"), ("b", "../k"), ("b", "a//b"), ("", "k")])
@pytest.mark.parametrize("action", ["info", "download", "delete"])
async def test_names_are_checked_before_any_store_sees_them(services, bucket, key, action):
    open_to_all = Principal(None, open=True)
    with pytest.raises(InvalidRequest):
        await getattr(services.files, action)(open_to_all, bucket, key)


@pytest.mark.parametrize(
    "upload",
    [
        NewUpload("../..", "k", "text/plain", 1),
        NewUpload("b", "../k", "text/plain", 1),
        NewUpload("b", "k", "not a type", 1),
        NewUpload("b", "k", "text/plain", -1),
        NewUpload("b", "k", "text/plain", 1, digest="md5:00"),
    ],
)
async def test_a_new_upload_breaking_the_name_rules_is_refused(services, upload):
    with pytest.raises(InvalidRequest):
        await services.core.create(upload, WRITER, "test")


async def test_uploading_and_session_info_check_the_principal(services):
    with pytest.raises(Forbidden):
        await services.core.create(NewUpload("b", "k", "text/plain", 3), STRANGER, "test")
    session = (await services.core.create(NewUpload("b", "k", "text/plain", 3), WRITER, "test")).session
    assert isinstance(await services.core.status(session.id, WRITER), Session)
    for call in (
        services.core.status(session.id, STRANGER),
        services.core.write(session.id, STRANGER, single_body(b"abc"), upload_offset=0, content_length=3),
        services.core.cancel(session.id, STRANGER),
        services.core.status("../../etc", WRITER),
    ):
        with pytest.raises(SessionNotFound):
            await call
    assert (await services.core.status(session.id, WRITER)).offset == 0


async def test_the_core_says_which_new_upload_was_deduplicated(services, stored):
    """The fronts tell a client so; they never infer it from the file they get back."""
    again = await services.core.create(
        NewUpload("b", "again", "text/plain", 5, digest=f"blake3:{stored.digest}"), WRITER, "t"
    )
    assert again.deduplicated and again.file is not None and again.file.digest == stored.digest
    assert (await services.core.status(again.session.id, WRITER)).completed
    empty = await services.core.create(NewUpload("b", "empty", "text/plain", 0), WRITER, "t")
    assert empty.file is not None and not empty.deduplicated  # completed at once, but with nothing to store
    unknown = await services.core.create(
        NewUpload("b", "new", "text/plain", 5, digest=f"blake3:{'0' * 64}"), WRITER, "t"
    )
    assert unknown.file is None and not unknown.deduplicated


async def chunks_of(*parts: bytes):
    for part in parts:
        yield part


async def test_a_last_body_declares_the_size_of_a_session_without_one(services):
    session = (await services.core.create(NewUpload("b", "streamed", "text/plain", None), WRITER, "test")).session
    first = await services.core.write(session.id, WRITER, chunks_of(b"hel"), upload_offset=0, content_length=None)
    assert isinstance(first, Session) and first.length_deferred and first.offset == 3
    entry = await services.core.write(
        session.id, WRITER, chunks_of(b"lo ", b"world"), upload_offset=3, content_length=None, last=True
    )
    assert isinstance(entry, Entry) and entry.bytes == 11
    assert await read(services, WRITER, "b", "streamed") == b"hello world"


async def test_an_empty_last_body_completes_an_empty_file(services):
    session = (await services.core.create(NewUpload("b", "empty", "text/plain", None), WRITER, "test")).session
    entry = await services.core.write(session.id, WRITER, chunks_of(), upload_offset=0, content_length=None, last=True)
    assert isinstance(entry, Entry) and entry.bytes == 0


async def test_a_last_body_past_the_limit_is_refused_whole(services):
    services.core.max_upload_bytes = 8
    session = (await services.core.create(NewUpload("b", "big", "text/plain", None), WRITER, "test")).session
    with pytest.raises(UploadTooLarge):
        await services.core.write(
            session.id, WRITER, chunks_of(b"12345", b"6789"), upload_offset=0, content_length=None, last=True
        )
    assert (await services.core.status(session.id, WRITER)).offset == 0
