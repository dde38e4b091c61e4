"""Buffers of one size, allocated once and reused, shared by the threads of the process.

The service runs with glibc's mmap threshold at 32 MiB and a trim threshold of 256 MiB
(service/ops/tuning.py), so a buffer of a few MiB comes from the heap (or a worker thread's malloc
arena) and stays there when freed, the heap fragmented by the small objects that settle between
such buffers: every large upload raised the peak RSS again. Buffers of a fixed size, filled in
place and handed back when written, are touched once and reused.
"""

from __future__ import annotations

import threading


class BufferPool:
    """Buffers of `size` bytes. `take` hands out a spare one or a new one; `spare` only while fewer than
    `count` exist. One beyond `count` is let go when it comes back, not kept."""

    def __init__(self, size: int, count: int) -> None:
        self.size = size
        self.count = count
        self._spare: list[bytearray] = []
        self._existing = 0
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        buffer = self._take(needed=True)
        assert buffer is not None
        return buffer

    def spare(self) -> bytearray | None:
        return self._take(needed=False)

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            if self._existing > self.count:
                self._existing -= 1
            else:
                self._spare.append(buffer)

    def _take(self, needed: bool) -> bytearray | None:
        with self._lock:
            if self._spare:
                return self._spare.pop()
            if self._existing >= self.count and not needed:
                return None
            self._existing += 1
        return bytearray(self.size)
