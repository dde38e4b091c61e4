"""Writing a request body into its staging file, off the event loop, with few hand-offs between threads.

The event loop gathers body chunks into buffers of WRITE_SIZE, hashes each and
hands it to a queue; one job on a worker thread at a time takes the queue in
order and writes it. The job runs while there is work and ends when the queue is
empty, so no thread waits on a client that pauses. The loop is woken only when it
waits (for room in the queue, or for the end), not after every buffer: a hand-off
between threads costs system calls and a fight for the GIL, and a GiB is a thousand
buffers. Memory stays within IN_FLIGHT + 1 buffers.

The hash stays on the event loop: BLAKE3 takes about 0.1 ms per buffer, a fixed
cost that never waits on anything, while a write may wait on the disk (when the
kernel throttles a writer with too many dirty pages) and so must not block the
loop. Hashing on the loop beat hashing on the worker in bench/ by a fifth: one
fewer hand-off of the GIL per buffer.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

from service.core.digests import ContentHasher
from service.core.ports import StagedFile

WRITE_SIZE = 1024 * 1024
IN_FLIGHT = 4
# The jobs' threads, shared by the process: jobs are short (a few buffers, never an fsync), so a few
# threads serve many uploads. Not the event loop's executor: its futures wake the loop on every job.
WRITERS = ThreadPoolExecutor(16, thread_name_prefix="files-write")
Then = Literal["sync", "close"] | None  # what a job does after writing a buffer


class ChunkWriter:
    """The staging file is opened by the first buffer's job and closed after the last one's:
    a small body costs one trip to a worker thread in all."""

    def __init__(self, open_file: Callable[[], StagedFile], offset: int, hasher: ContentHasher | None) -> None:
        self.hasher = hasher
        self.received = offset
        self.flushed = offset  # where the buffer starts: all before it is handed over
        self.file: StagedFile | None = None
        self._open_file = open_file
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._loop = asyncio.get_running_loop()
        # Shared with the job, under _lock: buffers to write (data, offset, sync or close after), how
        # many are done, the job's error, and the loop's waiter (buffers done it waits for, future).
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[bytes, int, Then]] = collections.deque()
        self._running = False
        self._done = 0
        self._error: BaseException | None = None
        self._waiter: tuple[int, asyncio.Future[None]] | None = None
        self._handed = 0  # the loop's count of buffers handed over
        self._job: Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self.received += len(chunk)
        if self._buffered >= WRITE_SIZE:
            await self._wait_done(self._handed - IN_FLIGHT + 1)
            self._hand_over(None)

    async def drain(self, close: bool = False) -> None:
        """Write (and hash) everything received so far, and sync it: afterwards `flushed == received`
        and those bytes are kept (the caller moves the offset).

        With `close` the file is closed after (opened first, if the body was empty: the
        staging file of every session written to exists), by the same job.
        """
        if self._chunks or close or self._handed:
            self._hand_over("close" if close else "sync")
        await self._wait_done(self._handed)

    def held(self) -> bytes | None:
        """Every byte received, taken from the writer, when none was handed to the file (not even opened
        then), else None: a small body that completes its upload goes to the blob store from memory."""
        if self._handed:
            return None
        data = b"".join(self._chunks)
        self._chunks, self._buffered = [], 0
        return data

    async def truncate(self, length: int) -> None:
        """Cut the file back to `length` (after `abandon`): drop bytes the service never acknowledged."""
        if self.file is not None:
            await asyncio.to_thread(self.file.truncate, length)

    async def abandon(self) -> None:
        """Drop what is buffered or queued and wait out the buffer being written, whatever its outcome."""
        self._chunks, self._buffered = [], 0
        with self._lock:
            self._queue.clear()
        if self._job is not None and not self._job.done():
            await asyncio.wait([asyncio.wrap_future(self._job)])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def _hand_over(self, then: Then) -> None:
        data = b"".join(self._chunks)  # one copy, without the regrowing of an appended buffer
        self._chunks, self._buffered = [], 0
        offset, self.flushed = self.flushed, self.flushed + len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        with self._lock:
            self._queue.append((data, offset, then))
            start, self._running = not self._running, True
        self._handed += 1
        if start:
            self._job = WRITERS.submit(self._work)

    async def _wait_done(self, count: int) -> None:
        """Wait until the first `count` buffers handed over are written; a failed write raises here."""
        while True:
            with self._lock:
                if self._error is None and self._done >= count:
                    return
                if self._error is None:
                    waiter = self._loop.create_future()
                    self._waiter = (count, waiter)
            if self._error is not None:
                raise self._error
            await waiter

    def _work(self) -> None:
        """On a worker thread: write the queued buffers in order, until the queue is empty."""
        while True:
            with self._lock:
                if not self._queue or self._error is not None:
                    self._running = False
                    return
                data, offset, then = self._queue.popleft()
            try:
                if self.file is None:
                    self.file = self._open_file()
                if data:
                    self.file.write_at(data, offset)
                if then == "sync":
                    self.file.sync()
                elif then == "close":
                    self.file.close()
                error = None
            except BaseException as failure:  # handed to the loop, which raises it
                error = failure
            with self._lock:
                self._done += 1
                self._error = self._error or error
                waiter = self._waiter
                if waiter is not None and (self._error is not None or self._done >= waiter[0]):
                    self._waiter = None
                else:
                    waiter = None
            if waiter is not None:
                self._loop.call_soon_threadsafe(_resolve, waiter[1])


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
