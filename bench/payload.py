"""Upload content, made once and stamped so that no two uploads are equal.

The service stores each distinct content once: an upload equal to an earlier one skips
writing the blob, which would flatter it. A counter in the first bytes makes every upload
distinct at no cost, while the buffer itself is made once (a random block repeated: no
system here compresses, so repetition changes nothing but the time to make it).
"""

from __future__ import annotations

import itertools
import os

STAMP = 16
BLOCK = 16 * 1024 * 1024


class Payload:
    def __init__(self, large: int, small: int) -> None:
        block = os.urandom(min(large, BLOCK))
        self._large = bytearray(block * (large // len(block) + 1))[:large] if large else bytearray()
        self._small_tail = os.urandom(max(0, small - STAMP))
        self._counter = itertools.count(1)
        self._prefix = os.urandom(4)

    def _stamp(self) -> bytes:
        return self._prefix + next(self._counter).to_bytes(STAMP - len(self._prefix), "big")

    def large(self) -> memoryview:
        """The large buffer with a new stamp: valid until the next call."""
        self._large[:STAMP] = self._stamp()
        return memoryview(self._large)

    def small(self) -> memoryview:
        return memoryview(self._stamp() + self._small_tail)
