"""A part's body read from the first bytes of its buffer (the parts' buffers: a BufferPool in s3.py).

A part built by appending to a new bytearray per part cost a fresh 8 MiB allocation each time, on
whichever thread wrote it, which stayed in that thread's malloc arena when freed: a 1 GiB upload
raised the peak RSS by about 40 MiB where its parts need 24 (service/core/buffers.py).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class PartBody(io.RawIOBase):
    """The first bytes of a buffer as a seekable file, for a part or tail shorter than its buffer: botocore
    sends a bytes-like body only whole, and `bytes(buffer[:n])` would copy up to 8 MiB to send it."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        into = memoryview(target).cast("B")
        piece = self._view[self._position : self._position + len(into)]
        into[: len(piece)] = piece
        self._position += len(piece)
        return len(piece)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position
