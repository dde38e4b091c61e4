"""Serving a file's content: one byte range at most, conditional requests, streamed in bounded reads."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.core.errors import RangeNotSatisfiable
from service.core.files import Files
from service.core.model import Entry

_RANGE = re.compile(r"bytes=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.IGNORECASE | re.ASCII)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range asked for as (first, last) byte, inclusive; None to send the whole file.

    A header that is not one well-formed byte range is ignored, as HTTP allows;
    a well-formed one that misses the file raises RangeNotSatisfiable. Numbers of any
    length are compared exactly, without converting ones int() refuses (over 4300 digits).
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip(" \t"))
    if match is None or (not match[1] and not match[2]):
        return None
    if match[1]:
        if match[2] and _below(match[2], match[1]):
            return None
        first = _number(match[1], size)
        if first >= size:
            raise RangeNotSatisfiable(
                f"range starts at byte {_shown(match[1])}, past the end of a {size}-byte file", size=size
            )
        return first, size - 1 if not match[2] else _number(match[2], size - 1)
    suffix = _number(match[2], size)
    if suffix == 0:
        raise RangeNotSatisfiable(f"a {_shown(match[2])}-byte suffix of a {size}-byte file is empty", size=size)
    return size - suffix, size - 1


def _significant(digits: str) -> str:
    return digits.lstrip("0") or "0"


def _below(a: str, b: str) -> bool:
    """Whether the number written `a` is smaller than the one written `b`, however long they are."""
    a, b = _significant(a), _significant(b)
    return (len(a), a) < (len(b), b)


def _number(digits: str, cap: int) -> int:
    """The number written `digits`, or `cap` when it is larger."""
    digits = _significant(digits)
    return cap if len(digits) > len(str(cap)) else min(int(digits), cap)


def _shown(digits: str) -> str:
    digits = _significant(digits)
    return digits if len(digits) <= 30 else f"{digits[:12]}...({len(digits)} digits)"


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether If-None-Match names this ETag (weak comparison, as RFC 9110 asks for GET)."""
    if header is None:
        return False
    candidates = [candidate.strip() for candidate in header.split(",")]
    return "*" in candidates or any(candidate.removeprefix("W/") == etag for candidate in candidates)


def range_applies(if_range: str | None, etag: str) -> bool:
    """Whether the Range header is to be honoured: always without If-Range; with it, only when it names
    this ETag exactly (RFC 9110's strong comparison). A weak tag or a date never matches (no
    Last-Modified is sent), so a client resuming a download of a key replaced since gets the new
    content whole rather than its bytes spliced onto the old."""
    return if_range is None or if_range.strip() == etag


def content_response(request: Request, files: Files, entry: Entry) -> Response | BlobResponse:
    """The answer to a GET or HEAD of the file's content: ETag, If-None-Match (304), one Range (206),
    If-Range."""
    etag = f'"{entry.digest}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    asked = request.headers.get("range") if range_applies(request.headers.get("if-range"), etag) else None
    span = parse_range(asked, entry.bytes)
    # HEAD is answered here: a presigned URL is signed for one method, GET.
    if request.method == "GET" and (location := files.redirect(entry)) is not None:
        return Response(status_code=307, headers={**headers, "Location": location, "Cache-Control": "no-store"})
    headers["Content-Type"] = entry.mime_type
    first, last = span if span is not None else (0, entry.bytes - 1)
    length = last - first + 1
    headers["Content-Length"] = str(length)
    if span is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{entry.bytes}"
    sent = length if request.method != "HEAD" else 0  # HEAD: the blob is opened, nothing read
    chunks = files.content(entry, first, sent, whole=span is None and sent == entry.bytes)
    return BlobResponse(chunks, 200 if span is None else 206, headers)


class BlobResponse:
    """Sends the chunks of a file's content (`service.core.files.Files.content`) after the headers.

    The first chunk is awaited before the headers go out, so that a missing blob is still
    answered with an error of its own (404) rather than a broken 200.
    """

    def __init__(self, chunks: AsyncGenerator[bytes, None], status: int, headers: dict[str, str]) -> None:
        self.chunks = chunks
        self.status = status
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with aclosing(self.chunks):
            data = await anext(self.chunks, b"")
            await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
            while data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
                del data  # sent: not held while the next chunks are read (memory stays within three)
                data = await anext(self.chunks, b"")
            await send({"type": "http.response.body", "body": b"", "more_body": False})
