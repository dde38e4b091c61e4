"""Process-wide settings for a server that moves large bodies and waits on fsync.

Both were measured with bench/ (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import platform
import sys
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("files.service")

# glibc's mallopt parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024
IO_THREADS = 64
GLIBC_TUNABLES = f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"


def exec_with_allocator_tunables() -> None:
    """Start this process again with glibc's allocator tuned from its first allocation.

    `tune_allocator` (mallopt, at startup) reaches the same settings, but in bench/ runs
    beside other servers the process started with GLIBC_TUNABLES moved large bodies much
    faster (8 MiB chunks: 882 against 502 MiB/s), for reasons the profiles did not show;
    so `files-service serve` takes the measured way. Tunables the environment sets already
    are kept (and ours then left out, if it sets the same ones); the exec keeps the process id.
    """
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    present = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.mmap_threshold" in present or "glibc.malloc.trim_threshold" in present:
        return
    os.environ["GLIBC_TUNABLES"] = f"{present}:{GLIBC_TUNABLES}" if present else GLIBC_TUNABLES
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def tune_allocator() -> None:
    """Serve body-sized allocations from the heap instead of a fresh mmap each time.

    Untuned, every request-body chunk of about 256 KiB is new mmap'd memory, and
    a 1 GiB upload costs some 350,000 page faults. The same as
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):  # not glibc (musl, macOS): nothing to tune
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def widen_io_threads() -> None:
    """Let many uploads wait on fsync at once (the filesystem commits their journals together).

    asyncio's default of min(32, cores + 4) threads queued small uploads behind each other's fsyncs.
    """
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(IO_THREADS, thread_name_prefix="files-io"))
