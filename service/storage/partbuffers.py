"""The buffers that S3 parts are gathered in, allocated once and reused, and a part's body read from one.

A part built by appending to a new bytearray per part costs a fresh 8 MiB allocation each time, on
whichever pool thread wrote it. The service runs with glibc's mmap threshold at 32 MiB and a trim
threshold of 256 MiB (service/ops/tuning.py), so each such buffer came from the writing thread's
malloc arena and stayed there when freed: every arena that ever held a part kept its pages, and a
1 GiB upload raised the peak RSS by about 40 MiB where its parts need 24. Buffers of a fixed size,
filled in place and handed back when their part is in the store, are touched once and reused.
"""

from __future__ import annotations

import collections
import io
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class PartBuffers:
    """Buffers of `size` bytes: taken to fill a part, given back once it is uploaded. At most `idle` are
    kept between uploads (one upload's worth); more, taken at once by concurrent uploads, are freed."""

    def __init__(self, size: int, idle: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._idle: collections.deque[bytearray] = collections.deque(maxlen=idle)

    def take(self) -> bytearray:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return bytearray(self._size)

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            self._idle.append(buffer)


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
