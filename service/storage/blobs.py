"""The blob directory: every distinct content once, at a path named by its BLAKE3 digest.

Layout: `<root>/<d[0:2]>/<d[2:4]>/<d>`. A blob is placed by linking a flushed
staging file under a temporary name (or writing a small upload held in memory to one, and
flushing it), renaming that, then flushing the directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from stat import S_ISREG

from service.core.digests import hash_file
from service.core.errors import BlobMissing, CorruptBlob
from service.core.model import BlobInfo
from service.core.ports import LocalFiles, Observe, StagingArea
from service.storage.durable import (
    contained,
    fsync_dir,
    in_made_dirs,
    make_dirs,
    remove_durably,
    space_checked,
    temporary_path,
    write_atomic,
)

DIGEST = re.compile(r"[0-9a-f]{64}")
READ_SIZE = 2 * 1024 * 1024  # the most one read takes: one download alone reads this much at a time
MIN_READ = 256 * 1024
# What the downloads of a store hold in reads not yet sent, until each is down to MIN_READ: every download
# holds up to three (one in the transport's buffer, one waiting for it to drain, one read ahead).
READ_BUDGET = 12 * 1024 * 1024
# The reads of every download in the process, on a few threads of their own rather than the 64 I/O threads:
# never queued behind uploads' fsyncs, and each buffer allocated in one of a few malloc arenas, which
# then serve the next buffers (docs/design.md, "Cost per download").
READERS = ThreadPoolExecutor(2, thread_name_prefix="files-read")


class BlobStore:
    """The blob store port on a filesystem; staged uploads must be `LocalFiles` on the same one
    (a blob is a hard link to its staging file: no copy)."""

    def __init__(self, root: Path) -> None:
        make_dirs(root)
        self.root = root.resolve()
        self._reading = 0  # downloads in progress

    def path(self, digest: str) -> Path:
        if not DIGEST.fullmatch(digest):
            raise ValueError(f"not a BLAKE3 hex digest: {digest!r}")
        return contained(self.root, self.root / digest[:2] / digest[2:4] / digest)

    def where(self, digest: str) -> str:
        return str(self.path(digest))

    def rehash(self, digest: str) -> str:
        try:
            return hash_file(self.path(digest)).blake3
        except FileNotFoundError:
            raise BlobMissing(f"no blob {digest}") from None

    def quarantine(self, digest: str) -> str:
        """Into `quarantine/` beside the blob directory, named by the digest and the time."""
        quarantine = self.root.parent / "quarantine"
        make_dirs(quarantine)
        aside = quarantine / f"{digest}.{int(time.time())}"
        os.replace(self.path(digest), aside)
        return str(aside)

    def stat(self, digest: str) -> BlobInfo | None:
        """None when it is missing or not a regular file (a planted link is no blob)."""
        try:
            stat = self.path(digest).lstat()
        except FileNotFoundError:
            return None
        return BlobInfo(digest, stat.st_size, stat.st_mtime) if S_ISREG(stat.st_mode) else None

    def stamp(self, digest: str) -> tuple[int, ...] | None:
        """The `BlobStamps` capability: a write or a rename changes the ctime, which utime cannot set back."""
        try:
            stat = self.path(digest).lstat()
        except FileNotFoundError:
            return None
        if not S_ISREG(stat.st_mode):
            return None
        return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns

    def commit(self, staging: StagingArea, name: str, digest: str) -> bool:
        if not isinstance(staging, LocalFiles):
            raise TypeError("the filesystem blob store commits only staged uploads that are local files")
        return self.place(staging.path(name), digest)

    def store(self, content: bytes, digest: str) -> bool:
        """As `place`, from `content` in memory: written to a temporary name, flushed, renamed, and the
        directory flushed."""
        target = self.path(digest)
        if _reused(target, len(content)):
            return False
        write_atomic(target, content)
        return True

    def place(self, source: Path, digest: str) -> bool:
        """Make the content of `source` (already hashed to `digest`) a blob; False when it was one.

        The blob is a hard link to the flushed `source`, made under a temporary name
        and renamed into place, so a crash never leaves a partial blob; `source` is
        left for the caller to remove once the upload is recorded as complete. When
        an equal blob exists the new copy is not linked (that is the deduplication)
        and the old one's mtime is refreshed, so that a sweep in its grace period
        keeps it. An existing blob of the wrong size is damaged and is replaced.
        """
        target = self.path(digest)
        if _reused(target, source.stat().st_size):
            return False
        temporary = temporary_path(target)
        try:
            with space_checked():
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                in_made_dirs(lambda: os.link(source, temporary), target.parent)
                os.replace(temporary, target)
                fsync_dir(target.parent)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return True

    async def read(
        self, digest: str, first: int, length: int, observe: Observe | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Reads run on a thread of READERS, the next one while the caller handles this one; the more
        downloads run at once, the smaller each read (READ_BUDGET)."""
        loop = asyncio.get_running_loop()
        try:
            fd = await loop.run_in_executor(READERS, os.open, self.path(digest), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BlobMissing(f"no blob {digest}") from None

        def read(position: int, size: int) -> bytes:
            data = os.pread(fd, size, position)
            if observe is not None:
                observe(data)
            return data

        position, end = first, first + length

        def read_from(position: int) -> asyncio.Future[bytes] | None:
            if position >= end:
                return None
            return loop.run_in_executor(READERS, read, position, min(self._read_size(), end - position))

        self._reading += 1
        reading = None
        try:
            reading = read_from(position)
            while reading is not None:
                data = await reading
                if not data:
                    raise CorruptBlob(f"blob {digest} ended at byte {position} of {end}")
                position += len(data)
                reading = read_from(position)  # the next read runs while this one is handled
                yield data
        finally:
            self._reading -= 1
            if reading is not None:  # never close the file under a read still on its thread
                await asyncio.wait([reading])
            os.close(fd)

    def _read_size(self) -> int:
        share = READ_BUDGET // (3 * self._reading)
        return max(MIN_READ, min(READ_SIZE, share - share % MIN_READ))

    def delete(self, digest: str) -> bool:
        return remove_durably(self.path(digest))

    def list(self) -> Iterator[BlobInfo]:
        """Files that are not named like blobs are skipped."""
        for first in _subdirectories(self.root):
            for second in _subdirectories(first):
                with os.scandir(second) as listing:
                    for item in listing:
                        if DIGEST.fullmatch(item.name):
                            try:
                                stat = item.stat()
                            except FileNotFoundError:
                                continue
                            yield BlobInfo(item.name, stat.st_size, stat.st_mtime)


def _reused(target: Path, size: int) -> bool:
    """Whether the blob `target` is there with `size` bytes: then nothing is written (the deduplication)
    and its mtime is refreshed, so that a sweep in its grace period keeps it."""
    if _regular_size(target) != size:
        return False
    os.utime(target, follow_symlinks=False)
    return True


def _regular_size(path: Path) -> int | None:
    try:
        stat = path.lstat()
    except FileNotFoundError:
        return None
    return stat.st_size if S_ISREG(stat.st_mode) else None


def _subdirectories(path: Path) -> list[Path]:
    with os.scandir(path) as listing:
        return sorted(Path(item.path) for item in listing if item.is_dir(follow_symlinks=False))
