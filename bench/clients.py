"""A lean HTTP/1.1 client on raw asyncio streams, for the hot loops of the benchmark.

The load generator shares the machine's two cores with the server it measures, so it must
cost little: httpx alone saturates a core at a few hundred small uploads a second, and then
the benchmark measures itself. Here one keep-alive connection per client sends a request
head and the body as memoryview slices of a buffer made once, and reads the answer with a
large buffer, discarding download bodies without keeping them.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Self

SEND_SLICE = 1024 * 1024
READ_LIMIT = 4 * 1024 * 1024


class HTTPError(Exception):
    """An answer the benchmark did not expect: the run is wrong, not slow."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received: int  # body bytes, also when the body was discarded

    def expect(self, *statuses: int) -> Response:
        if self.status not in statuses:
            raise HTTPError(f"expected {statuses}, got {self.status}: {self.body[:300]!r}")
        return self

    def json(self) -> dict:
        return json.loads(self.body)


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port, limit=READ_LIMIT)
            self._writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview = b"",
        discard: bool = False,
    ) -> Response:
        """Send one request and read its answer; with `discard` the body is counted, not kept."""
        reader, writer = await self._open()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body or method in ("POST", "PATCH", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        try:
            if len(body) <= SEND_SLICE:
                writer.write(head + bytes(body))
            else:
                writer.write(head)
                view = memoryview(body)
                for start in range(0, len(view), SEND_SLICE):
                    writer.write(view[start : start + SEND_SLICE])
                    await writer.drain()
            await writer.drain()
            return await self._read_response(reader, method, discard)
        except BaseException:
            await self.close()
            raise

    async def _read_response(self, reader: asyncio.StreamReader, method: str, discard: bool) -> Response:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304) or status < 200:
            body, received = b"", 0
        elif "content-length" in headers:
            body, received = await _read_exactly(reader, int(headers["content-length"]), discard)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, received = await _read_chunked(reader, discard)
        else:
            data = await reader.read()
            body, received = (b"" if discard else data), len(data)
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, headers, body, received)


async def _read_exactly(reader: asyncio.StreamReader, length: int, discard: bool) -> tuple[bytes, int]:
    if not discard:
        return await reader.readexactly(length), length
    remaining = length
    while remaining:
        data = await reader.read(min(remaining, READ_LIMIT))
        if not data:
            raise HTTPError(f"the body ended {remaining} bytes short")
        remaining -= len(data)
    return b"", length


async def _read_chunked(reader: asyncio.StreamReader, discard: bool) -> tuple[bytes, int]:
    parts: list[bytes] = []
    received = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are expected
            return b"".join(parts), received
        data, _ = await _read_exactly(reader, size, discard)
        parts.append(data)
        received += size
        await reader.readexactly(2)


def parts(data: memoryview, chunk: int | None) -> list[tuple[int, memoryview]]:
    """(offset, slice) of each request's body: the whole of `data`, or `chunk` bytes at a time."""
    step = chunk or len(data) or 1
    return [(offset, data[offset : offset + step]) for offset in range(0, max(len(data), 1), step)]
