"""Buffers of one size, allocated once and reused, shared by the threads of the process.

The service runs with glibc's mmap threshold at 32 MiB and a trim threshold of 256 MiB
(service/ops/tuning.py), so a buffer of a few MiB comes from the heap (or a worker thread's malloc
arena) and stays there when freed, the heap fragmented by the small objects that settle between
such buffers: every large upload raised the peak RSS again. Buffers of a fixed size, filled in
place and handed back when written, are touched once and reused.

The body writer's buffers are `page_aligned`: a staging file writes them past the page cache
(service/storage/staging.py), which only memory that starts on a page allows.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

B = TypeVar("B", bytearray, mmap.mmap)


def page_aligned(size: int) -> mmap.mmap:
    """`size` bytes of anonymous memory mapped for the buffer alone: it starts on a page, and goes back to
    the system whole when the buffer does."""
    return mmap.mmap(-1, size)


class BufferPool(Generic[B]):
    """Buffers of `size` bytes, each made by `make(size)`. `take` hands out a spare one or a new one;
    `spare` only while fewer than `count` exist. One beyond `count` is let go when it comes back, not kept."""

    def __init__(self, make: Callable[[int], B], size: int, count: int) -> None:
        self.make: Callable[[int], B] = make
        self.size = size
        self.count = count
        self._spare: list[B] = []
        self._existing = 0
        self._lock = threading.Lock()

    def take(self) -> B:
        buffer = self._take(needed=True)
        assert buffer is not None
        return buffer

    def spare(self) -> B | None:
        return self._take(needed=False)

    def give(self, buffer: B) -> None:
        with self._lock:
            if self._existing > self.count:
                self._existing -= 1
            else:
                self._spare.append(buffer)

    def _take(self, needed: bool) -> B | None:
        with self._lock:
            if self._spare:
                return self._spare.pop()
            if self._existing >= self.count and not needed:
                return None
            self._existing += 1
        return self.make(self.size)
