"""Serving a blob: one byte range at most, conditional requests, streamed in bounded reads."""

from __future__ import annotations

import asyncio
import os
import re

from starlette.types import Receive, Scope, Send

from service.errors import RangeNotSatisfiable

READ_SIZE = 1024 * 1024
_RANGE = re.compile(r"bytes=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)[ \t]*", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range asked for as (first, last) byte, inclusive; None to send the whole file.

    A header that is not one well-formed byte range is ignored, as HTTP allows;
    a well-formed one that misses the file raises RangeNotSatisfiable.
    """
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if match[1]:
        first = int(match[1])
        last = int(match[2]) if match[2] else size - 1
        if last < first:
            return None
        if first >= size:
            raise RangeNotSatisfiable(f"range starts at {first}, past the end of a {size}-byte file", size=size)
        return first, min(last, size - 1)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        raise RangeNotSatisfiable(f"a {suffix}-byte suffix of a {size}-byte file is empty", size=size)
    return max(0, size - suffix), size - 1


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether If-None-Match names this ETag (weak comparison, as RFC 9110 asks for GET)."""
    if header is None:
        return False
    candidates = [candidate.strip() for candidate in header.split(",")]
    return "*" in candidates or any(candidate.removeprefix("W/") == etag for candidate in candidates)


class BlobResponse:
    """Streams `length` bytes from `start` of an open file, closing it when done."""

    def __init__(self, fd: int, start: int, length: int, status: int, headers: dict[str, str], body: bool) -> None:
        self.fd = fd
        self.start = start
        self.length = length
        self.status = status
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
            position, end = self.start, self.start + self.length
            while self.body and position < end:
                data = await asyncio.to_thread(os.pread, self.fd, min(READ_SIZE, end - position), position)
                if not data:
                    raise OSError(f"blob ended at byte {position}, expected {end}")
                position += len(data)
                await send({"type": "http.response.body", "body": data, "more_body": position < end})
            if not self.body or self.length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            os.close(self.fd)
