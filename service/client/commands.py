"""The client subcommands of `files-service`: their arguments, and one handler per command.

Each handler returns the exit status; `reporting` turns what can go wrong (an error answer,
an unreachable server, a local problem) into one `files-service: ...` line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import math
import mimetypes
import os
import re
import sys
import time
from collections.abc import Callable, Container, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

import httpx
from blake3 import blake3

from service.client import ClientError
from service.client.api import DEFAULT_URL, ApiError, FilesClient
from service.client.progress import Progress, human
from service.client.state import SessionState, Source, Upload
from service.core import names
from service.core.auth import ACTIONS, ALL_BUCKETS

T = TypeVar("T")

MiB = 1024 * 1024
DEFAULT_CHUNK_SIZE = 8 * MiB
# Pieces a chunk is streamed in: the progress bar moves within a chunk, and memory stays small.
PIECE_SIZE = 256 * 1024
OCTET_STREAM = "application/octet-stream"
UNIT_SHIFTS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}
SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
FIRST_DELAY = 0.5
MAX_DELAY = 15.0
DEFAULT_RETRY_SECONDS = 60.0
# How often an upload whose session vanishes midway starts a new one before it gives up.
NEW_SESSIONS = 3
FAILED, USAGE, INTERRUPTED = 1, 2, 130  # 2 as argparse exits for usage errors


# --- arguments ---------------------------------------------------------------------------------


def chunk_size(text: str) -> int:
    """A byte count: 8388608, 8M, 512K, 1G (powers of 1024)."""
    match = SIZE.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"not a positive size: {text!r} (e.g. 8M, 512K, 1048576)")
    return int(match[1]) << UNIT_SHIFTS[match[2].lower()]


def file_name(text: str) -> tuple[str, str]:
    """`bucket/key`, checked with the service's own name rules before anything is sent."""
    bucket, _, key = text.partition("/")
    problem = names.bucket_error(bucket) or names.key_error(key)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not bucket/key: {problem}")
    return bucket, key


def location(text: str) -> tuple[str, str]:
    """`bucket` or `bucket/prefix`."""
    bucket, _, prefix = text.partition("/")
    if (problem := names.bucket_error(bucket)) is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not bucket[/prefix]: {problem}")
    return bucket, prefix


def regular_file(text: str) -> Path:
    path = Path(text).resolve()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not a readable file")
    return path


def connection_options(after_command: bool) -> argparse.ArgumentParser:
    """--url, --token and --retry-seconds, for before a client command (`files-service --url U ls`) and after it.

    Only the top level has defaults: after the command an option counts only when given,
    so that it does not hide the same option given before the command.
    """
    options = argparse.ArgumentParser(add_help=False)

    def default(value: str | None) -> str | None:
        return argparse.SUPPRESS if after_command else value

    options.add_argument(
        "--url",
        default=default(os.environ.get("FILES_URL", DEFAULT_URL)),
        help=f"the service, e.g. https://files.example.com or 127.0.0.1:8321 (env FILES_URL; default {DEFAULT_URL})",
    )
    options.add_argument(
        "--token",
        default=default(os.environ.get("FILES_TOKEN")),
        help="bearer token (env FILES_TOKEN); write --token=T, as a token may start with '-'",
    )
    options.add_argument(
        "--retry-seconds",
        type=retry_seconds,
        default=default(os.environ.get("FILES_RETRY_SECONDS", str(DEFAULT_RETRY_SECONDS))),
        metavar="N",
        help="how long to keep retrying a service that is unreachable, busy or restarting, counted from the "
        f"first failure in a row; 0: no retries (env FILES_RETRY_SECONDS; default {DEFAULT_RETRY_SECONDS:g})",
    )
    return options


def retry_seconds(text: str) -> float:
    with contextlib.suppress(ValueError):
        if 0 <= (seconds := float(text)) < math.inf:
            return seconds
    raise argparse.ArgumentTypeError(f"not a number of seconds, 0 or more (also for FILES_RETRY_SECONDS): {text!r}")
    return seconds


def service_url(text: str) -> str:
    """The service's base URL, checked; `host:port` without a scheme means http://host:port."""
    candidate = text.strip()
    if "://" not in candidate:
        candidate = f"http://{candidate}"
    if (problem := url_problem(candidate)) is not None:
        raise ValueError(f"the service URL {text!r} (--url or FILES_URL) is not usable: {problem}; e.g. {DEFAULT_URL}")
    return candidate.rstrip("/")


def url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - reading it checks it
    except ValueError as error:
        return str(error).lower()
    if parts.scheme not in ("http", "https"):
        return f"its scheme is {parts.scheme!r}, not http or https"
    if not parts.hostname:
        return "it names no host"
    if any(character.isspace() for character in url):
        return "it contains a space"
    if parts.query or parts.fragment:
        return "it has a query or fragment"
    return None


def register(commands: argparse._SubParsersAction) -> None:
    """Add the client commands to the `files-service` parser (whose top level takes `connection_options(False)`)."""
    server = connection_options(after_command=True)

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, parents=[server], help=help, description=help)
        command.set_defaults(handler=reporting(handler))
        return command

    send = add("upload", upload, "upload a file, resumably: rerun the same command to resume an interrupted upload")
    send.add_argument("path", type=regular_file, metavar="PATH")
    send.add_argument("target", type=file_name, metavar="bucket/key")
    send.add_argument("--chunk-size", type=chunk_size, default=DEFAULT_CHUNK_SIZE, help="e.g. 8M (default), 512K")
    send.add_argument("--mime-type", help="default: guessed from the file name, else " + OCTET_STREAM)

    fetch = add("download", download, "download a file, resuming a PATH.part left by an interrupted download")
    fetch.add_argument("target", type=file_name, metavar="bucket/key")
    fetch.add_argument("path", nargs="?", type=Path, metavar="PATH", help="default: the key's last segment, here")
    fetch.add_argument("--force", action="store_true", help="replace PATH if it exists (never replaced without)")

    listing = add("ls", ls, "list the buckets, or the files of a bucket")
    listing.add_argument("location", nargs="?", type=location, metavar="bucket[/prefix]")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    add("info", info, "print a file's information as JSON").add_argument("target", type=file_name, metavar="bucket/key")
    add("rm", rm, "delete a file").add_argument("target", type=file_name, metavar="bucket/key")
    add("sessions", sessions, "the uploads in progress this client knows of, and how far the server has them")


def reporting(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a client command; what goes wrong becomes one line on stderr and a non-zero status."""

    @functools.wraps(handler)
    def run(arguments: argparse.Namespace) -> int:
        # httpx logs every request at INFO, which the service's logging set-up would show.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            arguments.url = service_url(arguments.url)
        except ValueError as error:
            return fail(str(error), USAGE)
        try:
            return handler(arguments)
        except (ApiError, ClientError) as error:
            return fail(str(error))
        except httpx.TransportError as error:
            return fail(f"cannot talk to {error.request.url.netloc.decode()}: {describe(error)}")
        except KeyboardInterrupt:
            return fail("interrupted", INTERRUPTED)
        except BrokenPipeError:
            # The reader of stdout went away (`| head`): stop quietly, as Python's docs advise.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return FAILED
        except OSError as error:  # a local file or directory
            return fail(str(error))

    return run


def fail(message: str, status: int = FAILED) -> int:
    print(f"files-service: {message}", file=sys.stderr)
    return status


def describe(error: Exception) -> str:
    return str(error) or type(error).__name__


def connect(arguments: argparse.Namespace, url: str | None = None) -> FilesClient:
    return FilesClient(url or arguments.url, arguments.token)


# --- retrying ------------------------------------------------------------------------------------


class Retries:
    """Tries again after errors that may pass (network, busy, 503), with exponential backoff, for `seconds`.

    The time counts from the first failure in a row: each success starts it afresh, so a long
    transfer over a flaky network goes on as long as it keeps making progress.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.failures = 0
        self.first_failure = 0.0

    def failed(self, error: httpx.TransportError | ApiError) -> None:
        """Wait before the next try; re-raise the error when it will not pass or the time is up."""
        if isinstance(error, ApiError) and not error.transient:
            raise error
        now = time.monotonic()
        if self.failures == 0:
            self.first_failure = now
        self.failures += 1
        left = self.first_failure + self.seconds - now
        if left <= 0:
            raise error
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (self.failures - 1), left)
        print(f"files-service: {describe(error)}; retrying in {delay:.3g} s", file=sys.stderr)
        time.sleep(delay)

    def succeeded(self) -> None:
        self.failures = 0

    def call(self, operation: Callable[[], T]) -> T:
        """The operation's result, tried again while its failures may pass."""
        while True:
            try:
                result = operation()
            except (httpx.TransportError, ApiError) as error:
                self.failed(error)
            else:
                self.succeeded()
                return result


# --- upload --------------------------------------------------------------------------------------


def upload(arguments: argparse.Namespace) -> int:
    path: Path = arguments.path
    bucket, key = arguments.target
    stat = path.stat()
    source = Source(arguments.url, bucket, key, str(path), stat.st_size, stat.st_mtime_ns)
    state = SessionState()
    retries = Retries(arguments.retry_seconds)
    with connect(arguments) as client:
        check_may_write(client, bucket, retries)
        known = state.find(source)
        offset = 0
        if known is not None and known.source != source:
            print(f"{path} has changed since upload session {known.session_id} began; starting anew", file=sys.stderr)
            # Cancelling frees the stale partial data now rather than when the session expires.
            with contextlib.suppress(ApiError, httpx.TransportError):
                client.cancel(known.session_id)
            state.forget(known)
            known = None
        if known is not None:
            try:
                offset = retries.call(lambda: client.session(known.session_id))["offset"]
                print(f"resuming upload session {known.session_id} at byte {offset}", file=sys.stderr)
            except ApiError as error:
                if error.status != 404:
                    raise
                print(f"upload session {known.session_id} is gone; starting a new one", file=sys.stderr)
                state.forget(known)
                known = None
        if known is None:
            known = start_upload(client, source, arguments.mime_type, retries)
            if isinstance(known, dict):  # an empty file is complete at once
                return show_file(known)
            state.remember(known)
        new_sessions = 0
        while True:
            try:
                file = send(client, known, offset, arguments.chunk_size, retries)
                break
            except ApiError as error:
                if error.code not in ("session_not_found", "digest_mismatch"):
                    raise
                state.forget(known)  # the server has dropped the session
                if error.code == "digest_mismatch" or new_sessions == NEW_SESSIONS:
                    raise
            new_sessions += 1
            # 404: the session is gone midway, as when a service restarts with its embedded Redis.
            print(
                f"upload session {known.session_id} is gone (did the service restart?); starting a new one",
                file=sys.stderr,
            )
            renewed = open_session(client, source, known.mime_type, known.digest, retries)
            if isinstance(renewed, dict):  # the same content is stored already
                return show_file(renewed)
            known, offset = renewed, 0
            state.remember(known)
    state.forget(known)
    return show_file(file)


def check_may_write(client: FilesClient, bucket: str, retries: Retries) -> None:
    """Refuse at once, before hashing a large file, an upload the token may not make."""
    token = retries.call(client.token)
    granted = {*token["buckets"].get(bucket, []), *token["buckets"].get(ALL_BUCKETS, [])}
    if not token["open"] and "write" not in granted:
        has = ", ".join(action for action in ACTIONS if action in granted) or "nothing"
        raise ClientError(f"token {token['name']!r} may not write to bucket {bucket!r} (it has: {has})")


def start_upload(client: FilesClient, source: Source, mime_type: str | None, retries: Retries) -> Upload | dict:
    """Hash the file, then open a session that declares the digest: the server checks the whole against it."""
    print(f"computing the BLAKE3 digest of {source.path} ({human(source.size)})", file=sys.stderr)
    with open(source.path, "rb") as file:
        digest = "blake3:" + hashlib.file_digest(file, lambda: blake3(max_threads=blake3.AUTO)).hexdigest()
    mime_type = mime_type or mimetypes.guess_type(source.path)[0] or OCTET_STREAM
    return open_session(client, source, mime_type, digest, retries)


def open_session(client: FilesClient, source: Source, mime_type: str, digest: str, retries: Retries) -> Upload | dict:
    """A new session for the source; or, when the server completed it at once (empty content), the file."""
    created = retries.call(lambda: client.create_session(source.bucket, source.key, source.size, mime_type, digest))
    if "bucket" in created:
        return created
    return Upload(source, created["id"], digest, mime_type)


def send(client: FilesClient, upload: Upload, offset: int, chunk: int, retries: Retries) -> dict:
    """Send the file from `offset` in chunks until the server answers with the file.

    After a failure the server says where to go on: the 409 for a wrong offset carries it,
    otherwise it is asked (GET the session), since a broken-off chunk may have partly arrived.
    """
    source = upload.source
    with open(source.path, "rb") as file, Progress(f"{source.bucket}/{source.key}", source.size, offset) as progress:
        while True:
            length = min(chunk, source.size - offset)
            try:
                result = client.upload_chunk(upload.session_id, pieces(file, offset, length, progress), offset, length)
            except (httpx.TransportError, ApiError) as error:
                if isinstance(error, ApiError) and error.code == "session_completed":
                    return completed(client, upload)
                if isinstance(error, ApiError) and error.status == 409 and error.offset is not None:
                    offset = error.offset
                else:
                    retries.failed(error)
                    offset = retries.call(lambda: client.session(upload.session_id))["offset"]
                progress.update(offset)
                continue
            retries.succeeded()
            if "bucket" in result:
                return result
            offset = result["offset"]


def pieces(file: BinaryIO, offset: int, length: int, progress: Progress) -> Iterator[bytes]:
    """`length` bytes of the file from `offset`, in small pieces, moving the progress bar."""
    file.seek(offset)
    while length > 0:
        piece = file.read(min(PIECE_SIZE, length))
        if not piece:
            raise ClientError(f"{file.name} got shorter during the upload; run the command again to start over")
        length -= len(piece)
        progress.advance(len(piece))
        yield piece


def completed(client: FilesClient, upload: Upload) -> dict:
    """The session completed, but its answer was lost (a retry, a killed client): the file is the result."""
    source = upload.source
    file = client.info(source.bucket, source.key)
    if file["digest"] != upload.digest:
        raise ClientError(f"the upload completed, but {source.bucket}/{source.key} has since been replaced")
    return file


def show_file(file: dict) -> int:
    for field in ("bucket", "key", "bytes", "mime_type", "digest"):
        print(f"{field + ':':10} {file[field]}")
    return 0


# --- download ------------------------------------------------------------------------------------


def download(arguments: argparse.Namespace) -> int:
    """Download into PATH.part (resuming what is there with a Range request), verify, then rename."""
    bucket, key = arguments.target
    path: Path = arguments.path or Path(Path(key).name)
    if path.is_dir():
        path /= Path(key).name
    if path.exists() and not arguments.force:
        raise ClientError(f"{path} exists; add --force to replace it")
    part = path.with_name(path.name + ".part")
    retries = Retries(arguments.retry_seconds)
    with connect(arguments) as client:
        file = retries.call(lambda: client.info(bucket, key))
        total, expected = file["bytes"], file["digest"].removeprefix("blake3:")
        with open(part, "a+b") as out:
            have = out.tell()
            if have > total:
                out.truncate(0)
                have = 0
            out.seek(0)
            hasher = hashlib.file_digest(out, blake3)
            if have:
                print(f"resuming {part} at byte {have}", file=sys.stderr)
            with Progress(f"{bucket}/{key}", total, have) as progress:
                while have < total:
                    try:
                        with client.download(bucket, key, have) as response:
                            if response.status_code == 200 and have:  # the range was ignored: all of it comes
                                out.truncate(0)
                                have, hasher = 0, blake3()
                                progress.update(0)
                            expected = response.headers.get("etag", expected).strip('"')
                            for data in response.iter_bytes():
                                out.write(data)
                                hasher.update(data)
                                have += len(data)
                                progress.advance(len(data))
                    except (httpx.TransportError, ApiError) as error:
                        retries.failed(error)
                    else:
                        retries.succeeded()
    actual = hasher.hexdigest()
    if actual != expected:
        part.unlink()
        raise ClientError(
            f"the downloaded content's BLAKE3 is {actual}, not {expected} (its ETag); "
            f"removed {part}, run the command again to download it afresh"
        )
    os.replace(part, path)
    print(f"downloaded {bucket}/{key} to {path} ({file['bytes']} bytes, blake3:{actual})")
    return 0


# --- listing, information, deleting --------------------------------------------------------------


def ls(arguments: argparse.Namespace) -> int:
    retries = Retries(arguments.retry_seconds)
    with connect(arguments) as client:
        if arguments.location is None:
            buckets = retries.call(client.buckets)
            print(json.dumps(buckets, indent=2) if arguments.json else "\n".join(buckets))
            return 0
        files = retries.call(lambda: list(client.list(*arguments.location)))
    if arguments.json:
        print(json.dumps(files, indent=2))
        return 0
    rows = [
        [
            file["key"],
            str(file["bytes"]),
            file["mime_type"],
            datetime.fromtimestamp(file["created_at"], UTC).isoformat(),
        ]
        for file in files
    ]
    print_table(["KEY", "BYTES", "MIME TYPE", "CREATED"], rows, right=(1,))
    return 0


def print_table(headers: list[str], rows: list[list[str]], right: Container[int] = ()) -> None:
    """Columns as wide as their widest cell; the columns in `right` (numbers) aligned right."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))
        ]
        print("  ".join(cells).rstrip())


def info(arguments: argparse.Namespace) -> int:
    with connect(arguments) as client:
        print(json.dumps(Retries(arguments.retry_seconds).call(lambda: client.info(*arguments.target)), indent=2))
    return 0


def rm(arguments: argparse.Namespace) -> int:
    with connect(arguments) as client:
        file = Retries(arguments.retry_seconds).call(lambda: client.delete(*arguments.target))
    print(f"removed {file['bucket']}/{file['key']} ({file['bytes']} bytes, {file['digest']})")
    return 0


def sessions(arguments: argparse.Namespace) -> int:
    """Each remembered upload with the offset its server reports now; 'gone' when it no longer knows it."""
    uploads = SessionState().uploads()
    if not uploads:
        print("no uploads in progress")
        return 0
    rows = []
    for upload in uploads:
        source = upload.source
        with connect(arguments, source.server) as client:
            try:
                progress = f"{client.session(upload.session_id)['offset']} / {source.size}"
            except ApiError as error:
                progress = "gone" if error.status == 404 else f"error: {error}"
            except httpx.TransportError as error:
                progress = f"unreachable: {describe(error)}"
        rows.append([f"{source.bucket}/{source.key}", progress, source.path, upload.session_id, source.server])
    print_table(["FILE", "OFFSET", "LOCAL PATH", "SESSION", "SERVER"], rows)
    return 0
