"""`upload_file` and `download_file` called from Python, as a notebook would, against the app in this process.

FilesClient is synchronous and the app is ASGI: `AppTransport` carries each request into the app
on an event loop in another thread. Faults (a dropped connection, a session lost on the server)
are put in its path with `intercept`; an interruption (a killed client) is an event handler that
raises once enough bytes have gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from blake3 import blake3
from conftest import BASE_URL
from starlette.applications import Starlette

from service.client.api import ApiError, FilesClient
from service.client.events import (
    Deduplicated,
    DownloadResumed,
    Event,
    EventHandler,
    Hashing,
    Retrying,
    SessionGone,
    SourceChanged,
    TransferEnded,
    TransferMoved,
    TransferStarted,
    UploadResumed,
)
from service.client.state import SessionState
from service.client.transfer import (
    ContentMismatchError,
    Downloaded,
    NotPermittedError,
    StoredFile,
    TargetExistsError,
    download_file,
    upload_file,
)
from service.core.auth import new_token

CHUNK = 64 * 1024
CONTENT_BYTES = 5 * CHUNK + 4321
OCTET_STREAM = "application/octet-stream"


class AppTransport(httpx.BaseTransport):
    """Requests into an ASGI app through a blocking portal; `intercept` sees each one first, and may raise."""

    def __init__(self, app: Starlette, portal: BlockingPortal) -> None:
        self.app = httpx.ASGITransport(app=app)
        self.portal = portal
        self.intercept: Callable[[httpx.Request], None] = lambda request: None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.intercept(request)
        # The app reads the body on its own loop: read the client's (synchronous) body here first.
        request = httpx.Request(request.method, request.url, headers=request.headers, content=request.read())
        return self.portal.call(self.send, request)

    async def send(self, request: httpx.Request) -> httpx.Response:
        response = await self.app.handle_async_request(request)
        return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())


class Interrupted(Exception):
    """A client stopped midway, as by Ctrl-C or a kill."""


def interrupting_after(limit: int, events: list[Event]) -> EventHandler:
    """A handler that records events and interrupts the transfer once more than `limit` bytes have moved."""
    moved = 0

    def handle(event: Event) -> None:
        nonlocal moved
        events.append(event)
        if isinstance(event, TransferMoved):
            moved += event.count
            if moved > limit:
                raise Interrupted

    return handle


def dropping_the_second_chunk(times: int) -> Callable[[httpx.Request], None]:
    """An `intercept` that drops the connection of the chunk at offset CHUNK, the first `times` times."""
    dropped = 0

    def intercept(request: httpx.Request) -> None:
        nonlocal dropped
        if request.method == "POST" and request.headers.get("Upload-Offset") == str(CHUNK) and dropped < times:
            dropped += 1
            raise httpx.ConnectError("connection reset", request=request)

    return intercept


def stored(files: FilesClient, bucket: str, key: str) -> bytes:
    with files.download(bucket, key) as response:
        return response.read()


def moved(events: list[Event]) -> int:
    return sum(event.count for event in events if isinstance(event, TransferMoved))


def b3(content: bytes) -> str:
    return "blake3:" + blake3(content).hexdigest()


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal() as portal:
        yield portal


@pytest.fixture
def transport(make_app: Callable[..., Starlette], portal: BlockingPortal) -> AppTransport:
    return AppTransport(make_app(), portal)


@pytest.fixture
def files(transport: AppTransport) -> Iterator[FilesClient]:
    with FilesClient(BASE_URL, transport=transport) as files:
        yield files


@pytest.fixture
def state(tmp_path: Path) -> SessionState:
    return SessionState(tmp_path / "state" / "sessions.json")


@pytest.fixture
def content() -> bytes:
    return os.urandom(CONTENT_BYTES)


@pytest.fixture
def source(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    return path


def interrupted_upload(files: FilesClient, source: Path, state: SessionState) -> str:
    """Upload until two chunks are on the server, then stop: the session the state remembers."""
    with pytest.raises(Interrupted):
        upload_file(files, source, "b", "k", chunk_size=CHUNK, state=state, on_event=interrupting_after(2 * CHUNK, []))
    [upload] = state.uploads()
    assert files.session(upload.session_id)["offset"] == 2 * CHUNK
    return upload.session_id


# --- upload --------------------------------------------------------------------------------------


def test_upload_in_chunks_tells_its_progress_and_returns_the_stored_file(
    files: FilesClient, source: Path, content: bytes, state: SessionState
) -> None:
    events: list[Event] = []
    file = upload_file(files, source, "b", "dir/k", chunk_size=CHUNK, state=state, on_event=events.append)

    assert (file.bucket, file.key, file.size, file.mime_type) == ("b", "dir/k", len(content), OCTET_STREAM)
    assert file.digest == b3(content)
    assert file.url == f"{BASE_URL}/v1/files/b/dir/k:content"
    assert events[0] == Hashing(str(source), len(content))
    assert events[1] == TransferStarted("b/dir/k", len(content), 0)
    assert events[-1] == TransferEnded()
    assert moved(events) == len(content)
    assert state.uploads() == []
    assert StoredFile.from_response(files.info("b", "dir/k")) == file


def test_an_interrupted_upload_resumes_its_session_when_called_again(
    files: FilesClient, source: Path, content: bytes, state: SessionState
) -> None:
    session_id = interrupted_upload(files, source, state)

    events: list[Event] = []
    file = upload_file(files, source, "b", "k", chunk_size=CHUNK, state=state, on_event=events.append)
    assert file.digest == b3(content)
    assert events[:2] == [UploadResumed(session_id, 2 * CHUNK), TransferStarted("b/k", len(content), 2 * CHUNK)]
    assert moved(events) == len(content) - 2 * CHUNK  # nothing sent twice, nothing hashed again
    assert not any(isinstance(event, Hashing) for event in events)
    assert files.session(session_id)["offset"] == len(content)
    assert state.uploads() == []


def test_a_gone_session_or_a_changed_file_starts_a_new_upload(
    files: FilesClient, source: Path, content: bytes, state: SessionState
) -> None:
    first = interrupted_upload(files, source, state)
    files.cancel(first)
    events: list[Event] = []
    upload_file(files, source, "b", "k", chunk_size=CHUNK, state=state, on_event=events.append)
    assert events[:2] == [SessionGone(first, midway=False), Hashing(str(source), len(content))]

    files.delete("b", "k")  # else the service holds the content, and the next upload sends nothing
    second = interrupted_upload(files, source, state)
    source.write_bytes(content + b"more")
    events.clear()
    file = upload_file(files, source, "b", "k", chunk_size=CHUNK, state=state, on_event=events.append)
    assert events[0] == SourceChanged(str(source), second)
    with pytest.raises(ApiError) as cancelled:
        files.session(second)
    assert cancelled.value.status == 404
    assert file.digest == b3(content + b"more")
    assert state.uploads() == []


def test_a_session_lost_midway_is_started_again(
    transport: AppTransport, files: FilesClient, source: Path, content: bytes, state: SessionState
) -> None:
    sessions: list[str] = []

    def lose_the_session_at_the_second_chunk(request: httpx.Request) -> None:
        if request.method == "POST" and "/session:" in request.url.path:
            sessions.append(request.url.path.rpartition(":")[2])
            if len(sessions) == 2:
                files.cancel(sessions[0])

    transport.intercept = lose_the_session_at_the_second_chunk
    events: list[Event] = []
    file = upload_file(files, source, "b", "k", chunk_size=CHUNK, state=state, on_event=events.append)

    assert SessionGone(sessions[0], midway=True) in events
    assert sessions[-1] != sessions[0]
    assert file.digest == b3(content)
    assert stored(files, "b", "k") == content
    assert state.uploads() == []


def test_a_dropped_connection_is_retried(
    transport: AppTransport, files: FilesClient, source: Path, content: bytes, state: SessionState
) -> None:
    transport.intercept = dropping_the_second_chunk(times=1)
    events: list[Event] = []
    file = upload_file(files, source, "b", "k", chunk_size=CHUNK, state=state, on_event=events.append)

    [retrying] = [event for event in events if isinstance(event, Retrying)]
    assert isinstance(retrying.error, httpx.ConnectError) and retrying.delay > 0
    assert file.digest == b3(content)
    assert stored(files, "b", "k") == content


def test_without_retry_time_a_dropped_connection_fails_and_the_next_call_resumes(
    transport: AppTransport, files: FilesClient, source: Path, content: bytes, state: SessionState
) -> None:
    transport.intercept = dropping_the_second_chunk(times=1)
    events: list[Event] = []
    with pytest.raises(httpx.ConnectError):
        upload_file(files, source, "b", "k", chunk_size=CHUNK, retry_seconds=0, state=state, on_event=events.append)
    assert not any(isinstance(event, Retrying) for event in events)
    assert events[-1] == TransferEnded()

    [upload] = state.uploads()
    events.clear()
    upload_file(files, source, "b", "k", chunk_size=CHUNK, retry_seconds=0, state=state, on_event=events.append)
    assert events[0] == UploadResumed(upload.session_id, CHUNK)
    assert stored(files, "b", "k") == content


def test_an_empty_file_is_stored_at_once(files: FilesClient, tmp_path: Path, state: SessionState) -> None:
    empty = tmp_path / "notes.txt"
    empty.write_bytes(b"")
    events: list[Event] = []
    file = upload_file(files, empty, "b", "empty.txt", state=state, on_event=events.append)
    assert (file.size, file.mime_type, file.digest) == (0, "text/plain", b3(b""))
    assert events == [Hashing(str(empty), 0)]
    assert state.uploads() == []


def test_content_the_service_holds_already_is_not_sent_again(
    transport: AppTransport, files: FilesClient, source: Path, content: bytes, state: SessionState
) -> None:
    first = upload_file(files, source, "b", "first", chunk_size=CHUNK, state=state)
    requests: list[httpx.Request] = []
    transport.intercept = requests.append
    events: list[Event] = []

    file = upload_file(files, source, "other", "second", chunk_size=CHUNK, state=state, on_event=events.append)

    assert events == [Hashing(str(source), len(content)), Deduplicated("other/second", len(content))]
    assert [(request.method, request.url.path) for request in requests] == [("GET", "/v1/token"), ("POST", "/v1/files")]
    assert (file.bucket, file.key, file.size, file.digest) == ("other", "second", len(content), first.digest)
    assert stored(files, "other", "second") == content
    assert state.uploads() == []


def test_a_token_that_may_not_write_is_refused_before_the_file_is_hashed(
    make_app: Callable[..., Starlette], portal: BlockingPortal, tmp_path: Path, source: Path, state: SessionState
) -> None:
    token, entry = new_token("reader")
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"tokens": [{**entry, "buckets": {"b": ["read"]}}]}))
    transport = AppTransport(make_app(auth_tokens_file=tokens_file), portal)
    events: list[Event] = []
    with FilesClient(BASE_URL, token, transport=transport) as files, pytest.raises(NotPermittedError) as refused:
        upload_file(files, source, "b", "k", state=state, on_event=events.append)
    assert str(refused.value) == "token 'reader' may not write to bucket 'b' (it has: read)"
    assert events == []


# --- download ------------------------------------------------------------------------------------


@pytest.fixture
def uploaded(files: FilesClient, source: Path, state: SessionState) -> StoredFile:
    return upload_file(files, source, "b", "dir/model.bin", chunk_size=CHUNK, state=state)


def test_download_to_the_keys_name_or_into_a_directory(
    files: FilesClient, uploaded: StoredFile, content: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    done = download_file(files, "b", "dir/model.bin")
    assert done == Downloaded("b", "dir/model.bin", Path("model.bin"), len(content), uploaded.digest)
    assert Path("model.bin").read_bytes() == content

    into = tmp_path / "into"
    into.mkdir()
    assert download_file(files, "b", "dir/model.bin", into).path == into / "model.bin"
    assert (into / "model.bin").read_bytes() == content
    assert sorted(path.name for path in into.iterdir()) == ["model.bin"]


def test_download_resumes_a_part_file(files: FilesClient, uploaded: StoredFile, content: bytes, tmp_path: Path) -> None:
    target = tmp_path / "copy.bin"
    part = tmp_path / "copy.bin.part"
    part.write_bytes(content[: CHUNK + 5])
    events: list[Event] = []
    done = download_file(files, "b", "dir/model.bin", target, on_event=events.append)

    assert events[:2] == [DownloadResumed(part, CHUNK + 5), TransferStarted("b/dir/model.bin", len(content), CHUNK + 5)]
    assert moved(events) == len(content) - CHUNK - 5
    assert done.digest == uploaded.digest
    assert target.read_bytes() == content
    assert not part.exists()


def test_download_of_content_that_does_not_match_its_etag_keeps_no_file(
    files: FilesClient, uploaded: StoredFile, tmp_path: Path
) -> None:
    target = tmp_path / "copy.bin"
    part = tmp_path / "copy.bin.part"
    part.write_bytes(os.urandom(1000))  # not the file's first 1000 bytes
    with pytest.raises(ContentMismatchError) as refused:
        download_file(files, "b", "dir/model.bin", target)
    assert uploaded.digest.removeprefix("blake3:") in str(refused.value)
    assert not target.exists() and not part.exists()


def test_download_never_replaces_a_file_without_force(
    files: FilesClient, uploaded: StoredFile, content: bytes, tmp_path: Path
) -> None:
    target = tmp_path / "copy.bin"
    target.write_bytes(b"mine")
    with pytest.raises(TargetExistsError):
        download_file(files, "b", "dir/model.bin", target)
    assert target.read_bytes() == b"mine"
    download_file(files, "b", "dir/model.bin", target, force=True)
    assert target.read_bytes() == content
