"""Write-behind: the kernel starts writing an upload's bytes to the disk while the rest still arrives.

A completed upload is flushed (fsync) before the service answers. Left to the end, that flush
writes the whole file at once: about a quarter of a second per GiB on the disk measured for
docs/benchmarks.md, in which nothing else of the upload moves. So each time a staging file
has been written past another WRITE_BEHIND bytes, the block just completed is handed to the
kernel's writeback (`sync_file_range` with SYNC_FILE_RANGE_WRITE: start writing, do not
wait), and the final fsync has only the last block left, and the journal. Durability is
unchanged: nothing is acknowledged as stored before its fsync; this only moves disk writes
earlier, off the request's path.

Linux only (glibc and musl both have the call); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

WRITE_BEHIND = 32 * 1024 * 1024  # per block: 8 MiB blocks cost the writer twice the CPU for the same flush
SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE = _sync_file_range()


def completed_blocks(offset: int, length: int, block: int = WRITE_BEHIND) -> tuple[int, int] | None:
    """The range (start, length) of the whole blocks that a write of `length` bytes at `offset` completed,
    or None: each block is handed over once, by the write that reaches its end."""
    start, end = offset // block * block, (offset + length) // block * block
    return (start, end - start) if end > start else None


def write_behind(fd: int, offset: int, length: int) -> None:
    """After writing `length` bytes at `offset` of the file open at `fd`: start the writeback of the
    blocks that write completed. A hint: its errors are the final fsync's to report."""
    if _SYNC_FILE_RANGE is None or (blocks := completed_blocks(offset, length)) is None:
        return
    _SYNC_FILE_RANGE(fd, blocks[0], blocks[1], SYNC_FILE_RANGE_WRITE)
