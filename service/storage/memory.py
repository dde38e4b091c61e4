"""The blob store and staging ports in memory: a second implementation beside the filesystem's.

For the fast tests that do not look at files on disk, and as the smallest example of a store
(docs/design.md, "adding a store"). One process only; nothing survives it. Thread-safe, since
the core calls stores on worker threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Iterator, Sequence

from service.core.digests import ContentHasher, Digests
from service.core.errors import BlobMissing, CorruptBlob, StagingLost
from service.core.model import BlobInfo
from service.core.ports import Observe, StagingArea

READ_SIZE = 2 * 1024 * 1024


class MemoryStagedFile:
    def __init__(self, content: bytearray) -> None:
        self._content = content

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        self._content[offset : offset + len(data)] = data

    def sync(self) -> None:
        """Nothing to flush: writes are visible at once."""

    def truncate(self, length: int) -> None:
        del self._content[length:]

    def close(self) -> None:
        """Nothing to flush: writes are visible at once."""


class MemoryStaging:
    """Staged uploads as byte arrays, by name."""

    def __init__(self) -> None:
        self._staged: dict[str, bytearray] = {}
        self._lock = threading.Lock()

    def open(self, name: str, offset: int, read_back: bool = False) -> MemoryStagedFile:
        with self._lock:
            if offset == 0:
                self._staged[name] = bytearray()
            content = self._staged.get(name, bytearray())
            if len(content) < offset:
                raise StagingLost(f"staged upload {name} holds {len(content)} bytes, not {offset}")
            del content[offset:]
        return MemoryStagedFile(content)

    def length(self, name: str) -> int | None:
        with self._lock:
            content = self._staged.get(name)
        return None if content is None else len(content)

    def digests(self, name: str, sha256: bool = False, md5: bool = False) -> Digests:
        hasher = ContentHasher(sha256=sha256, md5=md5)
        hasher.update(self.content(name))
        return hasher.digests()

    def concatenate(self, parts: Sequence[tuple[str, int]], into: str) -> None:
        joined = bytearray()
        with self._lock:
            for name, length in parts:
                content = self._staged.get(name)
                if content is None or len(content) < length:
                    held = "none" if content is None else len(content)
                    raise StagingLost(f"staged upload {name} holds {held} bytes, not {length}")
                joined += content[:length]
            self._staged[into] = joined

    def content(self, name: str) -> bytes:
        """A copy of the staged upload's bytes; StagingLost when there is none."""
        with self._lock:
            content = self._staged.get(name)
            if content is None:
                raise StagingLost(f"staged upload {name} is gone")
            return bytes(content)

    def remove(self, name: str) -> None:
        with self._lock:
            self._staged.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._staged)


class MemoryBlobStore:
    """Blobs as bytes by digest, with the time each was last placed or reused."""

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def stat(self, digest: str) -> BlobInfo | None:
        with self._lock:
            found = self._blobs.get(digest)
        return None if found is None else BlobInfo(digest, len(found[0]), found[1])

    def commit(self, staging: StagingArea, name: str, digest: str) -> bool:
        if not isinstance(staging, MemoryStaging):
            raise TypeError("the memory blob store commits only staged uploads in memory")
        return self.store(staging.content(name), digest)

    def store(self, content: bytes, digest: str) -> bool:
        with self._lock:
            existing = self._blobs.get(digest)
            reused = existing is not None and len(existing[0]) == len(content)  # another size: damaged
            self._blobs[digest] = (existing[0] if existing is not None and reused else content, time.time())
        return not reused

    async def read(
        self, digest: str, first: int, length: int, observe: Observe | None = None
    ) -> AsyncGenerator[bytes, None]:
        with self._lock:
            found = self._blobs.get(digest)
        if found is None:
            raise BlobMissing(f"no blob {digest}")
        content, end = found[0], first + length
        for position in range(first, end, READ_SIZE):
            data = content[position : min(position + READ_SIZE, end)]
            if position + len(data) < min(position + READ_SIZE, end):
                raise CorruptBlob(f"blob {digest} ended at byte {len(content)} of {end}")
            if observe is not None:
                observe(data)
            yield data

    def delete(self, digest: str) -> bool:
        with self._lock:
            return self._blobs.pop(digest, None) is not None

    def list(self) -> Iterator[BlobInfo]:
        with self._lock:
            listing = [BlobInfo(digest, len(content), modified) for digest, (content, modified) in self._blobs.items()]
        return iter(listing)
