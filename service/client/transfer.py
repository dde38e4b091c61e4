"""Uploads and downloads that resume and retry, for the CLI and for Python callers alike; nothing here prints.

An upload hashes the file, opens a session that declares the digest (the server checks the whole
against it, and completes it at once when it holds that content already where the token may read
it: nothing is sent then), remembers the session in the client's state file so that a later call resumes it, and
sends the file in chunks, asking the server where to go on after any failure. A download goes into
PATH.part, resumes what is there with a Range request, checks the BLAKE3 against the ETag, then
renames. What happens on the way goes to `on_event` (see `service.client.events`).

    with FilesClient("http://127.0.0.1:8321") as client:
        file = upload_file(client, "model.bin", "models", "run-1/model.bin")
        download_file(client, "models", "run-1/model.bin", "copy.bin")
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from blake3 import blake3

from service.client import ClientError
from service.client.api import ApiError, FilesClient
from service.client.events import (
    Deduplicated,
    DownloadResumed,
    EventHandler,
    Hashing,
    SessionGone,
    SourceChanged,
    TransferEnded,
    TransferMoved,
    TransferRepositioned,
    TransferStarted,
    UploadResumed,
    ignore,
)
from service.client.retries import DEFAULT_RETRY_SECONDS, Retries
from service.client.state import SessionState, Source, Upload
from service.core.auth import ACTIONS, ALL_BUCKETS
from service.core.digests import hash_file

MiB = 1024 * 1024
DEFAULT_CHUNK_SIZE = 8 * MiB
# Pieces a chunk is streamed in: progress moves within a chunk, and memory stays small.
PIECE_SIZE = 256 * 1024
OCTET_STREAM = "application/octet-stream"
# How often an upload whose session vanishes midway starts a new one before it gives up.
NEW_SESSIONS = 3


class NotPermittedError(ClientError):
    """The token may not write to the bucket: refused before the file is hashed."""


class SourceChangedError(ClientError):
    """The local file got shorter while it was being sent."""


class ReplacedError(ClientError):
    """The upload completed, but another upload has replaced the file since."""


class TargetExistsError(ClientError):
    """The download's target exists, and replacing it was not asked for."""


class ContentMismatchError(ClientError):
    """The downloaded content is not what its ETag says; the partial file is removed."""


@dataclass(frozen=True)
class StoredFile:
    """A file on the service, as its FileResponse describes it; `size` is the response's `bytes`."""

    bucket: str
    key: str
    size: int
    mime_type: str
    digest: str
    created_at: int
    url: str

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> StoredFile:
        return cls(
            bucket=body["bucket"],
            key=body["key"],
            size=body["bytes"],
            mime_type=body["mime_type"],
            digest=body["digest"],
            created_at=body["created_at"],
            url=body["url"],
        )


@dataclass(frozen=True)
class Downloaded:
    """A downloaded file, checked: where it is now, its size and its digest (`blake3:<hex>`)."""

    bucket: str
    key: str
    path: Path
    size: int
    digest: str


@contextlib.contextmanager
def transferring(on_event: EventHandler, label: str, total: int, position: int) -> Iterator[None]:
    """Tell that bytes start to move, and that they stopped, also when the transfer fails."""
    on_event(TransferStarted(label, total, position))
    try:
        yield
    finally:
        on_event(TransferEnded())


# --- upload --------------------------------------------------------------------------------------


def upload_file(
    client: FilesClient,
    path: str | os.PathLike[str],
    bucket: str,
    key: str,
    *,
    mime_type: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
    state: SessionState | None = None,
    on_event: EventHandler = ignore,
) -> StoredFile:
    """Upload a file to bucket/key, resuming the session an earlier call left for it; the stored file.

    `mime_type` defaults to a guess from the file name, else application/octet-stream. `state`
    (default: the client's state file) remembers the session until the upload completes.
    """
    source_path = Path(path).resolve()
    stat = source_path.stat()
    source = Source(client.base_url, bucket, key, str(source_path), stat.st_size, stat.st_mtime_ns)
    state = state or SessionState()
    retries = Retries(retry_seconds, on_event)
    check_may_write(client, bucket, retries)
    resumed = remembered(client, source, state, retries, on_event)
    if resumed is None:
        started = start_upload(client, source, mime_type, retries, on_event)
        if isinstance(started, StoredFile):  # an empty file, or content the service holds: complete at once
            return started
        state.remember(started)
        resumed = started, 0
    upload, offset = resumed
    new_sessions = 0
    while True:
        try:
            file = send(client, upload, offset, chunk_size, retries, on_event)
            break
        except ApiError as error:
            if error.code not in ("session_not_found", "digest_mismatch"):
                raise
            state.forget(upload)  # the server has dropped the session
            if error.code == "digest_mismatch" or new_sessions == NEW_SESSIONS:
                raise
        new_sessions += 1
        # 404: the session is gone midway, as when a service restarts with its embedded Redis.
        on_event(SessionGone(upload.session_id, midway=True))
        renewed = open_session(client, source, upload.mime_type, upload.digest, retries, on_event)
        if isinstance(renewed, StoredFile):  # the same content is stored already
            return renewed
        upload, offset = renewed, 0
        state.remember(upload)
    state.forget(upload)
    return file


def check_may_write(client: FilesClient, bucket: str, retries: Retries) -> None:
    """Refuse at once, before hashing a large file, an upload the token may not make."""
    token = retries.call(client.token)
    granted = {*token["buckets"].get(bucket, []), *token["buckets"].get(ALL_BUCKETS, [])}
    if not token["open"] and "write" not in granted:
        has = ", ".join(action for action in ACTIONS if action in granted) or "nothing"
        raise NotPermittedError(f"token {token['name']!r} may not write to bucket {bucket!r} (it has: {has})")


def remembered(
    client: FilesClient, source: Source, state: SessionState, retries: Retries, on_event: EventHandler
) -> tuple[Upload, int] | None:
    """The session an earlier call left for this source and the server's offset in it; None to start anew."""
    known = state.find(source)
    if known is None:
        return None
    if known.source != source:
        on_event(SourceChanged(source.path, known.session_id))
        # Cancelling frees the stale partial data now rather than when the session expires.
        with contextlib.suppress(ApiError, httpx.TransportError):
            client.cancel(known.session_id)
        state.forget(known)
        return None
    try:
        offset: int = retries.call(lambda: client.session(known.session_id))["offset"]
    except ApiError as error:
        if error.status != 404:
            raise
        on_event(SessionGone(known.session_id, midway=False))
        state.forget(known)
        return None
    on_event(UploadResumed(known.session_id, offset))
    return known, offset


def start_upload(
    client: FilesClient, source: Source, mime_type: str | None, retries: Retries, on_event: EventHandler
) -> Upload | StoredFile:
    """Hash the file, then open a session that declares the digest: the server checks the whole against it."""
    on_event(Hashing(source.path, source.size))
    digest = "blake3:" + hash_file(Path(source.path)).blake3
    mime_type = mime_type or mimetypes.guess_type(source.path)[0] or OCTET_STREAM
    return open_session(client, source, mime_type, digest, retries, on_event)


def open_session(
    client: FilesClient, source: Source, mime_type: str, digest: str, retries: Retries, on_event: EventHandler
) -> Upload | StoredFile:
    """A new session for the source; or, when the server completed it at once, the file: the content is
    empty, or (`deduplicated`) the server holds it already where the token may read it."""
    created = retries.call(lambda: client.create_session(source.bucket, source.key, source.size, mime_type, digest))
    if "bucket" in created:
        if created.get("deduplicated"):
            on_event(Deduplicated(f"{source.bucket}/{source.key}", source.size))
        return StoredFile.from_response(created)
    return Upload(source, created["id"], digest, mime_type)


def send(
    client: FilesClient, upload: Upload, offset: int, chunk_size: int, retries: Retries, on_event: EventHandler
) -> StoredFile:
    """Send the file from `offset` in chunks until the server answers with the file.

    After a failure the server says where to go on: the 409 for a wrong offset carries it,
    otherwise it is asked (GET the session), since a broken-off chunk may have partly arrived.
    """
    source = upload.source
    with open(source.path, "rb") as file, transferring(on_event, f"{source.bucket}/{source.key}", source.size, offset):
        while True:
            length = min(chunk_size, source.size - offset)
            try:
                body = pieces(file, offset, length, on_event)
                result = client.upload_chunk(upload.session_id, body, offset, length)
            except (httpx.TransportError, ApiError) as error:
                if isinstance(error, ApiError) and error.code == "session_completed":
                    return completed(client, upload)
                if isinstance(error, ApiError) and error.status == 409 and error.offset is not None:
                    offset = error.offset
                else:
                    retries.failed(error)
                    offset = retries.call(lambda: client.session(upload.session_id))["offset"]
                on_event(TransferRepositioned(offset))
                continue
            retries.succeeded()
            if "bucket" in result:
                return StoredFile.from_response(result)
            offset = result["offset"]


def pieces(file: BinaryIO, offset: int, length: int, on_event: EventHandler) -> Iterator[bytes]:
    """`length` bytes of the file from `offset`, in small pieces, each told as it goes."""
    file.seek(offset)
    while length > 0:
        piece = file.read(min(PIECE_SIZE, length))
        if not piece:
            raise SourceChangedError(f"{file.name} got shorter during the upload; run the command again to start over")
        length -= len(piece)
        on_event(TransferMoved(len(piece)))
        yield piece


def completed(client: FilesClient, upload: Upload) -> StoredFile:
    """The session completed, but its answer was lost (a retry, a killed client): the file is the result."""
    source = upload.source
    file = StoredFile.from_response(client.info(source.bucket, source.key))
    if file.digest != upload.digest:
        raise ReplacedError(f"the upload completed, but {source.bucket}/{source.key} has since been replaced")
    return file


# --- download ------------------------------------------------------------------------------------


def download_file(
    client: FilesClient,
    bucket: str,
    key: str,
    path: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
    on_event: EventHandler = ignore,
) -> Downloaded:
    """Download bucket/key to `path` (default: the key's last segment, here; into it if a directory).

    The bytes go into PATH.part first, which a later call resumes with a Range request; the
    content is checked against its BLAKE3 (the ETag) before PATH is replaced, and only with `force`.
    """
    target = Path(path) if path is not None else Path(Path(key).name)
    if target.is_dir():
        target /= Path(key).name
    if target.exists() and not force:
        raise TargetExistsError(f"{target} exists; add --force to replace it")
    part = target.with_name(target.name + ".part")
    retries = Retries(retry_seconds, on_event)
    file = StoredFile.from_response(retries.call(lambda: client.info(bucket, key)))
    expected = file.digest.removeprefix("blake3:")
    with open(part, "a+b") as out:
        have = out.tell()
        if have > file.size:
            out.truncate(0)
            have = 0
        hasher = blake3()
        if have:
            hasher.update_mmap(part)
            on_event(DownloadResumed(part, have))
        with transferring(on_event, f"{bucket}/{key}", file.size, have):
            while have < file.size:
                try:
                    with client.download(bucket, key, have) as response:
                        if response.status_code == 200 and have:  # the range was ignored: all of it comes
                            out.truncate(0)
                            have, hasher = 0, blake3()
                            on_event(TransferRepositioned(0))
                        expected = response.headers.get("etag", expected).strip('"')
                        for data in response.iter_bytes():
                            out.write(data)
                            hasher.update(data)
                            have += len(data)
                            on_event(TransferMoved(len(data)))
                except (httpx.TransportError, ApiError) as error:
                    retries.failed(error)
                else:
                    retries.succeeded()
    actual = hasher.hexdigest()
    if actual != expected:
        part.unlink()
        raise ContentMismatchError(
            f"the downloaded content's BLAKE3 is {actual}, not {expected} (its ETag); "
            f"removed {part}, run the command again to download it afresh"
        )
    os.replace(part, target)
    return Downloaded(bucket, key, target, file.size, f"blake3:{actual}")
