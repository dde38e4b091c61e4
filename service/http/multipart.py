"""A `multipart/form-data` body read part by part as it arrives: a file part's content is a stream.

Starlette's own form parser spools every file to a temporary file before the handler sees it;
a front that hands the content to the upload core as it streams in (an OpenAI `POST /files` of
many GiB) reads the form with this instead. python-multipart's `MultipartParser` does the
parsing; its callbacks queue events, and the reader feeds it the next chunk of the request only
when the events run out, so at most one chunk of the body is held at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.core.errors import InvalidRequest

# The events the parser's callbacks queue.
BEGIN, HEADER, HEADERS_DONE, DATA, END, FINISHED = range(6)
MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class Part:
    """One part of the form: its field name, the file name (None for a plain field) and content type."""

    name: str
    filename: str | None
    content_type: str | None


class FormReader:
    """Reads the parts of one form in order: `next_part`, then its content through `content` or `text`
    (or neither: `next_part` skips what was not read)."""

    def __init__(self, content_type: str, body: AsyncIterator[bytes]) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequest("the body must be multipart/form-data with a boundary")
        self._body = body
        self._events: deque[tuple[int, bytes]] = deque()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._in_part = False
        self._finished = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self._header_data(self._header_name, data[start:end]),
                "on_header_value": lambda data, start, end: self._header_data(self._header_value, data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": lambda: self._events.append((HEADERS_DONE, b"")),
                "on_part_data": lambda data, start, end: self._events.append((DATA, bytes(data[start:end]))),
                "on_part_end": lambda: self._events.append((END, b"")),
                "on_end": lambda: self._events.append((FINISHED, b"")),
            },
        )

    def _part_begin(self) -> None:
        self._header_bytes = 0
        self._events.append((BEGIN, b""))

    def _header_data(self, into: bytearray, data: bytes) -> None:
        """Counted as it comes, all of a part's headers together: a header that never ends, or
        headers without number, are refused before they fill the memory (not every python-multipart
        release this project allows sets limits of its own: 0.0.26 sets none)."""
        self._header_bytes += len(data)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise InvalidRequest(f"a part's headers are over {MAX_HEADER_BYTES} bytes")
        into.extend(data)

    def _header_end(self) -> None:
        self._events.append((HEADER, bytes(self._header_name).lower() + b"\0" + bytes(self._header_value)))
        self._header_name.clear()
        self._header_value.clear()

    async def _next(self) -> tuple[int, bytes]:
        while not self._events:
            if self._finished:
                raise InvalidRequest("the multipart body ends before its closing boundary")
            chunk = await anext(self._body, None)
            try:
                if chunk is None:
                    self._finished = True
                    self._parser.finalize()
                else:
                    self._parser.write(chunk)
            except MultipartParseError as error:
                raise InvalidRequest(f"the multipart body is malformed: {error}") from None
        return self._events.popleft()

    async def next_part(self) -> Part | None:
        """The next part, its headers read; None after the last one."""
        while self._in_part:  # what the caller left unread of the part before
            async for _ in self.content():
                pass
        kind, _ = await self._next()
        if kind == FINISHED:
            return None
        headers: dict[bytes, bytes] = {}
        while kind != HEADERS_DONE:
            kind, value = await self._next()
            if kind == HEADER:
                header, _, content = value.partition(b"\0")
                headers[header] = content
        self._in_part = True
        disposition, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise InvalidRequest("every part of the form needs Content-Disposition: form-data with a name")
        filename = options.get(b"filename")
        content_type = headers.get(b"content-type", b"")
        return Part(
            name=name.decode("utf-8", "replace"),
            filename=filename.decode("utf-8", "replace") if filename is not None else None,
            content_type=content_type.decode("latin-1").strip() if content_type else None,
        )

    async def content(self) -> AsyncIterator[bytes]:
        """The current part's content, as it arrives."""
        while self._in_part:
            kind, data = await self._next()
            if kind == DATA:
                if data:
                    yield data
            elif kind == END:
                self._in_part = False

    async def text(self, limit: int) -> str:
        """The current part's content as UTF-8 text of at most `limit` bytes (a plain field)."""
        value = bytearray()
        async for data in self.content():
            value += data
            if len(value) > limit:
                raise InvalidRequest(f"a form field is over {limit} bytes")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("a form field is not UTF-8 text") from None
