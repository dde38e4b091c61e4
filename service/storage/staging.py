"""Staging files: the partial content of uploads in progress, one file per upload.

A staging file lives on the same filesystem as the blobs, so that a finished
upload becomes a blob by a rename, without a copy.

Large writes go past the page cache (O_DIRECT), on a local disk's filesystem (filesystems.py) and where the write
starts and ends on a block, in the file and in memory (the body writer's full buffers do): the
kernel then neither copies them into the cache (the copy of a buffer filled on the other core cost
the writer thread 1.3 to 15 ms per 8 MiB) nor leaves them dirty for the commit's fsync to write out
after the last byte (270-310 ms per GiB). Measured with bench/ab.py, 1 GiB in 8 MiB chunks: 849 ->
1301 MiB/s, CPU per chunk 8.4 -> 5.0 ms (docs/design.md, "Cost per upload"). The bytes are on the
disk when such a write returns, more than a chunk's 2xx promises; the commit still fsyncs the file
(its size and blocks).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from service.core.digests import Digests, hash_file
from service.core.errors import StagingLost
from service.storage.durable import TEMPORARY, contained, make_dirs, space_checked
from service.storage.filesystems import takes_direct_writes
from service.storage.writeback import write_behind

O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux's: none elsewhere, and then every write is cached
BLOCK = 4096  # what a write past the page cache starts and ends on, in the file and in memory
BYPASS_MIN = 1024 * 1024  # the body writer's full buffers; a smaller write waits on the disk for little gain


class StagingFile:
    """An open staging file, written at an explicit position (`pwrite`), never appended blindly."""

    def __init__(self, path: Path, fd: int, read_back: bool = False, direct: bool = True) -> None:
        self.path = path
        self._fd = fd
        self._bypassing = False  # the descriptor has O_DIRECT
        self._can_bypass = bool(O_DIRECT) and direct and not read_back
        # A file read back and then removed (a part) is left to the kernel's own writeback, if it comes to that.
        self._writing_behind = not read_back

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        """Write all of `data` at `offset`: past the page cache when it is large and on blocks, else through
        it, each block it completes then handed to the kernel's writeback (`write_behind`)."""
        view = memoryview(data)
        start = offset
        self._bypass(len(view) >= BYPASS_MIN and not (offset | len(view)) % BLOCK)
        with space_checked():
            while view:
                try:
                    written = os.pwrite(self._fd, view, offset)
                except OSError as error:
                    if error.errno != errno.EINVAL or not self._bypassing:
                        raise
                    self._bypass(False)  # memory that does not start on a block: through the cache
                    continue
                offset += written
                view = view[written:]
        if self._writing_behind and not self._bypassing:
            write_behind(self._fd, start, offset - start)

    def _bypass(self, on: bool) -> None:
        """Switch O_DIRECT on or off for the writes that follow; a filesystem that refuses it is not asked again."""
        if on == self._bypassing or not self._can_bypass:
            return
        try:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, O_DIRECT if on else 0)
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            self._can_bypass = False
            return
        self._bypassing = on

    def truncate(self, length: int) -> None:
        """Drop everything from `length` on: bytes the service never acknowledged."""
        os.ftruncate(self._fd, length)

    def sync(self) -> None:
        """Nothing to do: a write in the page cache survives the process (the contract asks no more of a chunk)."""

    def copy_from(self, source: int, length: int, offset: int) -> int:
        """Copy up to `length` bytes from the start of the open file `source` to `offset`; how many
        there were. copy_file_range (which shares the blocks where the filesystem can), else sendfile."""
        copied = 0
        with space_checked():
            while copied < length:
                try:
                    count = os.copy_file_range(source, self._fd, length - copied, copied, offset + copied)
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.lseek(self._fd, offset + copied, os.SEEK_SET)
                    count = os.sendfile(self._fd, source, copied, length - copied)
                if count == 0:
                    break
                write_behind(self._fd, offset + copied, count)
                copied += count
        return copied

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Close the file; closing it again does nothing."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class StagingArea:
    """The staging port on a filesystem, with the `LocalFiles` capability (`path`)."""

    def __init__(self, root: Path) -> None:
        make_dirs(root)
        self.root = root.resolve()
        self.direct = takes_direct_writes(self.root)  # large writes past the page cache (filesystems.py)

    def path(self, name: str) -> Path:
        """Where the staging file `name` lives; OutsideRoot when that would lead out of the area."""
        return contained(self.root, self.root / name)

    def open(self, name: str, offset: int, read_back: bool = False) -> StagingFile:
        """Open for writing at `offset`, cutting off any bytes past it left by a broken write.

        At offset 0 the file is made (or emptied); past 0 it must hold at least `offset`
        bytes, else StagingLost: carrying on would fill the gap with zeros. With `read_back`
        every write goes through the page cache.
        """
        path = self.path(name)
        if offset == 0:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        else:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                raise StagingLost(f"{path} is gone, {offset} bytes with it") from None
        try:
            if offset != 0 and (size := os.fstat(fd).st_size) != offset:
                if size < offset:
                    raise StagingLost(f"{path} holds {size} bytes, not {offset}")
                os.ftruncate(fd, offset)
        except BaseException:
            os.close(fd)
            raise
        return StagingFile(path, fd, read_back=read_back, direct=self.direct)

    def where(self, name: str) -> str:
        return str(self.path(name))

    def written(self, name: str) -> float | None:
        try:
            return os.lstat(self.path(name)).st_mtime
        except FileNotFoundError:
            return None

    def length(self, name: str) -> int | None:
        try:
            return os.lstat(self.path(name)).st_size
        except FileNotFoundError:
            return None

    def digests(self, name: str, sha256: bool = False, md5: bool = False) -> Digests:
        try:
            return hash_file(self.path(name), sha256, md5)
        except FileNotFoundError:
            raise StagingLost(f"{self.path(name)} is gone") from None

    def concatenate(self, parts: Sequence[tuple[str, int]], into: str) -> None:
        """Copy the parts into `into` in the kernel: their bytes never pass through Python."""
        target = self.open(into, 0)
        try:
            offset = 0
            for name, length in parts:
                path = self.path(name)
                try:
                    source = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    raise StagingLost(f"{path} is gone") from None
                try:
                    copied = target.copy_from(source, length, offset)
                finally:
                    os.close(source)
                if copied < length:
                    raise StagingLost(f"{path} holds {copied} bytes, not {length}")
                offset += length
        finally:
            target.close()

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        """The name of every staging file (temporaries of interrupted writes are no session's)."""
        with os.scandir(self.root) as listing:
            return [
                item.name
                for item in listing
                if item.is_file(follow_symlinks=False) and not TEMPORARY.fullmatch(item.name)
            ]
