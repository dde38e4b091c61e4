"""Writer processes: the disk work of small uploads' commits, away from the event loop's interpreter lock.

A commit of content held in memory (a whole upload of up to `MOST` bytes that came in one request)
is some twenty system calls: the blob and the entry each written to a temporary file, flushed,
renamed, and their folders flushed. On a thread of the service each of them lets go of the
interpreter's lock and takes it back from the event loop, and under load that handing over
cost more CPU than the calls themselves (docs/design.md, "Writer processes"). A process has a lock
of its own: the loop pays one message each way, and the calls run beside it on another core.

The processes are spawned (a fork of a process with threads may copy a lock held mid-way) when
the first such commit comes, each with its own copy of the stores: they share nothing with the
service but the volume, as another worker of the fleet would. As in any program that spawns
processes, the main module must import without side effects: `files-service`, `python -m
service`, uvicorn's and gunicorn's are.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from service.core import crashpoints
from service.core.catalog import store_content
from service.core.errors import Unavailable
from service.core.model import Entry
from service.storage.blobs import BlobStore
from service.storage.entries import EntryStore

# The largest content sent to a writer: beyond it the copies of the message (pickled, through a pipe,
# unpickled) cost more CPU than the handing over of the GIL they save (measured: 64 KiB files 9 % faster
# through writers at the same CPU, 256 KiB files as fast at a quarter more CPU), so it stays on a thread.
MOST = 64 * 1024

# The stores of this writer process, set when it starts.
_stores: tuple[BlobStore, EntryStore] | None = None


def _start(blobs: BlobStore, entries: EntryStore, service: int) -> None:
    """A writer's start: its stores, and an end with the service's. Ctrl-C in a terminal (the whole
    process group) is the service's to handle, which then lets its writers go."""
    global _stores
    _stores = (blobs, entries)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    crashpoints.die_with(service)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_end_with, args=(parent.sentinel,), name="files-writer-watch", daemon=True).start()


def _end_with(sentinel: int) -> None:
    """Exit once the service is gone, however it went: a service killed (SIGKILL) cannot let its writers
    go, and they would wait for work forever (each holds both ends of the pool's queue)."""
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


def _store(entry: Entry, content: bytes) -> tuple[bool, Entry | None]:
    if _stores is None:
        raise RuntimeError("a writer process runs only what its pool sends it")
    blobs, entries = _stores
    return store_content(blobs, entries, None, entry, content)


class WriterProcesses:
    """The content writer port: `processes` writer processes for a volume's blob and entry stores."""

    def __init__(self, blobs: BlobStore, entries: EntryStore, processes: int) -> None:
        self.blobs = blobs
        self.entries = entries
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def store(self, entry: Entry, content: bytes) -> tuple[bool, Entry | None]:
        if len(content) > MOST:
            return await asyncio.to_thread(store_content, self.blobs, self.entries, None, entry, content)
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(self._running(), _store, entry, content)
        except BrokenProcessPool:  # a writer died since the last commit; nothing of this one ran yet
            self._discard()
            done = loop.run_in_executor(self._running(), _store, entry, content)
        try:
            return await done
        except BrokenProcessPool:
            self._discard()
            raise Unavailable(
                "a writer process died while it stored this upload; retry (the sweep settles what it left)"
            ) from None

    def close(self) -> None:
        """Let the writers finish what they were given and end."""
        self._discard(wait=True)

    def _running(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(self.blobs, self.entries, os.getpid()),
            )
        return self._pool

    def _discard(self, wait: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=not wait)
