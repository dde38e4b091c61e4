"""The client subcommands of `files-service`: their arguments, and one handler per command.

Each handler returns the exit status; `reporting` turns what can go wrong (an error answer,
an unreachable server, a local problem) into one `files-service: ...` line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Container
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from service.client import ClientError
from service.client.api import DEFAULT_URL, ApiError, FilesClient
from service.client.console import Console, describe
from service.client.retries import DEFAULT_RETRY_SECONDS, Retries
from service.client.state import SessionState
from service.client.transfer import DEFAULT_CHUNK_SIZE, OCTET_STREAM, download_file, upload_file
from service.core import names

UNIT_SHIFTS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}
SIZE = re.compile(r"(\d+)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
FAILED, USAGE, INTERRUPTED = 1, 2, 130  # 2 as argparse exits for usage errors


# --- arguments ---------------------------------------------------------------------------------


MIN_CHUNK = 4096


def chunk_size(text: str) -> int:
    """A byte count: 8388608, 8M, 512K, 1G (powers of 1024), at least MIN_CHUNK."""
    match = SIZE.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(f"not a positive size: {text!r} (e.g. 8M, 512K, 1048576)")
    size = int(match[1]) << UNIT_SHIFTS[match[2].lower()]
    if size < MIN_CHUNK:  # a request per byte or so: millions of requests for a few megabytes
        raise argparse.ArgumentTypeError(f"a chunk of {size} bytes is too small: give at least 4K (e.g. 8M)")
    return size


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
        except ApiError as error:
            if error.status == 401:  # the next thing to type: the token, not an HTTP header
                return fail(f"{error} (give a token with --token or FILES_TOKEN)")
            return fail(str(error))
        except ClientError as error:
            return fail(str(error))
        except httpx.ConnectError as error:
            where = error.request.url.netloc.decode()
            return fail(f"cannot talk to {where}: {describe(error)} (is the service running there? see --url)")
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


def connect(arguments: argparse.Namespace, url: str | None = None) -> FilesClient:
    return FilesClient(url or arguments.url, arguments.token)


# --- transfers -----------------------------------------------------------------------------------


def retries(arguments: argparse.Namespace) -> Retries:
    return Retries(arguments.retry_seconds, Console())


def upload(arguments: argparse.Namespace) -> int:
    bucket, key = arguments.target
    with connect(arguments) as client:
        file = upload_file(
            client,
            arguments.path,
            bucket,
            key,
            mime_type=arguments.mime_type,
            chunk_size=arguments.chunk_size,
            retry_seconds=arguments.retry_seconds,
            on_event=Console(),
        )
    for field, value in (
        ("bucket", file.bucket),
        ("key", file.key),
        ("bytes", file.size),
        ("mime_type", file.mime_type),
        ("digest", file.digest),
    ):
        print(f"{field + ':':10} {value}")
    return 0


def download(arguments: argparse.Namespace) -> int:
    """Download into PATH.part (resuming what is there with a Range request), verify, then rename."""
    bucket, key = arguments.target
    with connect(arguments) as client:
        done = download_file(
            client,
            bucket,
            key,
            arguments.path,
            force=arguments.force,
            retry_seconds=arguments.retry_seconds,
            on_event=Console(),
        )
    print(f"downloaded {bucket}/{key} to {done.path} ({done.size} bytes, {done.digest})")
    return 0


# --- listing, information, deleting --------------------------------------------------------------


def ls(arguments: argparse.Namespace) -> int:
    with connect(arguments) as client:
        if arguments.location is None:
            buckets = retries(arguments).call(client.buckets)
            print(json.dumps(buckets, indent=2) if arguments.json else "\n".join(buckets))
            return 0
        files = retries(arguments).call(lambda: list(client.list(*arguments.location)))
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
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def info(arguments: argparse.Namespace) -> int:
    with connect(arguments) as client:
        print(json.dumps(retries(arguments).call(lambda: client.info(*arguments.target)), indent=2))
    return 0


def rm(arguments: argparse.Namespace) -> int:
    with connect(arguments) as client:
        file = retries(arguments).call(lambda: client.delete(*arguments.target))
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
