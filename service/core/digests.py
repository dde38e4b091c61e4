"""BLAKE3 (always), and SHA-256 or MD5 when a client asked to be checked against one; a chunk's checksum."""

from __future__ import annotations

import hashlib
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blake3 import blake3

READ_SIZE = 1024 * 1024  # as fast to hash a GiB through as 4 MiB (0.27 s either way), and a peak 3 MiB lower


@dataclass(frozen=True)
class Digests:
    blake3: str
    sha256: str | None = None
    md5: str | None = None


class ContentHasher:
    """Hashes content as it streams in; SHA-256 and MD5 only when asked for, since they cost."""

    def __init__(self, sha256: bool = False, md5: bool = False) -> None:
        # One thread: a streaming hash runs on the event loop beside the writes, and BLAKE3's own
        # worker threads would only fight them for the cores (measured: 0.81 -> 0.86 of the ceiling).
        self._blake3 = blake3()
        self._sha256 = hashlib.sha256() if sha256 else None
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None

    def update(self, data: bytes | memoryview) -> None:
        self._blake3.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._md5 is not None:
            self._md5.update(data)

    def digests(self) -> Digests:
        sha256 = self._sha256.hexdigest() if self._sha256 is not None else None
        md5 = self._md5.hexdigest() if self._md5 is not None else None
        return Digests(blake3=self._blake3.hexdigest(), sha256=sha256, md5=md5)


class ChunkChecksum:
    """The digest a client gave for one chunk (tus's `Upload-Checksum`): the chunk is kept only when
    its bytes match it, so the core checks it before the session's offset moves past them."""

    ALGORITHMS = ("sha1", "sha256", "md5")

    def __init__(self, algorithm: str, expected: bytes) -> None:
        if algorithm not in self.ALGORITHMS:
            raise ValueError(f"not a checksum algorithm of this service: {algorithm!r}")
        self.algorithm = algorithm
        self.expected = expected
        self._hash = hashlib.new(algorithm, usedforsecurity=False)

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def matches(self) -> bool:
        return self._hash.digest() == self.expected


def hash_file(path: Path, sha256: bool = False, md5: bool = False) -> Digests:
    """Hash a whole file in one pass; BLAKE3 alone hashes each read on all cores."""
    if sha256 or md5:
        content = ContentHasher(sha256=sha256, md5=md5)
        _read_through(path, content.update)
        return content.digests()
    hasher = blake3(max_threads=blake3.AUTO)
    _read_through(path, hasher.update)
    return Digests(blake3=hasher.hexdigest())


def _read_through(path: Path, update: Callable[[memoryview], object]) -> None:
    """Every byte of the file to `update`, READ_SIZE at a time through one buffer. Not through a mapping
    of the file: every page of it counts in the process's resident set, and a 1 GiB concatenation
    hashed so took a worker's peak RSS past 1.1 GiB (bench/, peak RSS during 7). The buffer is
    anonymous memory mapped for the read alone and unmapped after: from the allocator, it stayed
    in the heap of the worker thread that read (glibc keeps one per thread, and keeps what it
    frees, service/ops/tuning.py), 4 to 8 MiB of 4 MiB reads for good in each such thread."""
    with open(path, "rb", buffering=0) as file, mmap.mmap(-1, READ_SIZE) as buffer:
        with memoryview(buffer) as view:
            while count := file.readinto(view):
                update(view[:count])
