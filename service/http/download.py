"""Serving a blob: one byte range at most, conditional requests, streamed in bounded reads."""

from __future__ import annotations

import asyncio
import logging
import os
import re

from blake3 import blake3
from starlette.types import Receive, Scope, Send

from service.core.errors import RangeNotSatisfiable

log = logging.getLogger("files.download")

READ_SIZE = 2 * 1024 * 1024
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


class CorruptBlob(Exception):
    """A blob's content no longer hashes to its name."""


class BlobResponse:
    """Streams `length` bytes from `start` of an open blob file, closing it when done.

    When the whole blob is sent (`verify` is its digest) the content is hashed on the
    way out and the last read is held back until the hash is known: a blob found
    corrupt is cut off before its end, so the client sees a broken download rather
    than a whole-looking wrong one.
    """

    def __init__(
        self, fd: int, start: int, length: int, status: int, headers: dict[str, str], body: bool, verify: str | None
    ) -> None:
        self.fd = fd
        self.start = start
        self.length = length
        self.status = status
        self.headers = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        self.body = body
        self.verify = verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
            if self.body:
                await self._send_body(send)
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            os.close(self.fd)

    async def _send_body(self, send: Send) -> None:
        hasher = blake3() if self.verify else None  # one thread: it runs beside the sending event loop

        def read(position: int, size: int) -> bytes:
            data = os.pread(self.fd, size, position)
            if hasher is not None:
                hasher.update(data)
            return data

        position, end = self.start, self.start + self.length

        def read_from(position: int) -> asyncio.Future[bytes] | None:
            if position >= end:
                return None
            return asyncio.ensure_future(asyncio.to_thread(read, position, min(READ_SIZE, end - position)))

        held = b""
        reading = read_from(position)
        try:
            while reading is not None:
                data = await reading
                if not data:
                    raise CorruptBlob(f"blob ended at byte {position} of {end}")
                position += len(data)
                reading = read_from(position)  # the next read runs while this one is sent
                if held:
                    await send({"type": "http.response.body", "body": held, "more_body": True})
                held = data
        finally:
            if reading is not None:  # never close the file under a read still on its thread
                await asyncio.wait([reading])
        if hasher is not None and hasher.hexdigest() != self.verify:
            log.error("blob %s is corrupt: its content hashes to %s; download cut off", self.verify, hasher.hexdigest())
            raise CorruptBlob(f"blob {self.verify} is corrupt")
        await send({"type": "http.response.body", "body": held, "more_body": False})
