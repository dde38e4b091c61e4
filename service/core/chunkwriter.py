"""Writing a request body into its staging file, off the event loop, with few hand-offs between threads.

The event loop gathers body chunks into buffers of WRITE_SIZE, hashes each and
hands it to a queue; one job on a worker thread at a time takes the queue in
order and writes it. The job runs while there is work and ends when the queue is
empty, so no thread waits on a client that pauses. The loop is woken only when it
waits (for room in the queue, or for the end), not after every buffer: a hand-off
between threads costs system calls and a fight for the GIL, and a GiB is a thousand
buffers. Memory stays within IN_FLIGHT + 1 buffers.

The buffers are few and shared by the process (`BufferPool`): chunks are copied into one as
they come (the one copy a join of them made), and once written it is taken again by the next
writer. A fresh megabyte from the allocator for each buffer, freed after its write, left the
heap fragmented by the small objects that settled between them, growing with every large
upload; and four uploads at once (tus's parallel parts) each held their own five. The pool
keeps POOLED; a writer that finds none spare goes on with one buffer in flight, waiting for
its own, never for another writer. A buffer starts on a page in memory (`page_aligned`) and ends
where a MiB of the file does, so that all but a body's first and last are written past the page
cache (service/storage/staging.py). A body smaller than GATHERED is joined at its end instead:
a small file takes no megabyte.

The hash stays on the event loop: BLAKE3 takes about 0.1 ms per buffer, a fixed
cost that never waits on anything, while a write may wait on the disk (when the
kernel throttles a writer with too many dirty pages) and so must not block the
loop. Hashing on the loop beat hashing on the worker in bench/ by a fifth: one
fewer hand-off of the GIL per buffer.
"""

from __future__ import annotations

import asyncio
import collections
import mmap
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Literal

from service.core.buffers import BufferPool, page_aligned
from service.core.digests import ContentHasher
from service.core.ports import StagedFile

WRITE_SIZE = 1024 * 1024
IN_FLIGHT = 4
GATHERED = 256 * 1024  # a body smaller than this is joined at its end, and takes no buffer of the pool
POOLED = 8  # full buffers the process keeps: two writers at IN_FLIGHT, or more writers at fewer each
# The jobs' threads, shared by the process: jobs are short (a few buffers, never an fsync), so a few
# threads serve many uploads. Not the event loop's executor: its futures wake the loop on every job.
WRITERS = ThreadPoolExecutor(16, thread_name_prefix="files-write")
Then = Literal["sync", "close"] | None  # what a job does after writing a buffer


BUFFERS = BufferPool(page_aligned, WRITE_SIZE, POOLED)


class ChunkWriter:
    """The staging file is opened by the first buffer's job and closed after the last one's:
    a small body costs one trip to a worker thread in all."""

    def __init__(self, open_file: Callable[[], StagedFile], offset: int, hasher: ContentHasher | None) -> None:
        self.hasher = hasher
        self.received = offset
        self.flushed = offset  # where the buffer starts: all before it is handed over
        self.file: StagedFile | None = None
        self._open_file = open_file
        self._chunks: list[bytes | memoryview] = []  # received, not yet in a buffer
        self._buffered = 0
        self._buffer: mmap.mmap | None = None  # the pool's buffer being filled, with `_filled` bytes
        self._filled = 0
        self._loop = asyncio.get_running_loop()
        # Shared with the job, under _lock: buffers to write (data, offset, sync or close after, the pool's
        # buffer that holds the data), how many are done, the job's error, and the loop's waiter (buffers
        # done it waits for, future).
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[bytes | memoryview, int, Then, mmap.mmap | None]] = collections.deque()
        self._running = False
        self._done = 0
        self._error: BaseException | None = None
        self._waiter: tuple[int, asyncio.Future[None]] | None = None
        self._handed = 0  # the loop's count of buffers handed over
        self._job: Future[None] | None = None

    async def add(self, chunk: bytes) -> None:
        self.received += len(chunk)
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffer is None and self._buffered < GATHERED:
            return  # the start of a body, gathered: a small one is joined at its end
        while self._chunks:  # each piece stays here until copied: a cancelled wait for a buffer loses none
            if self._buffer is None:
                self._buffer = await self._free_buffer()
            piece = memoryview(self._chunks[0])
            room = WRITE_SIZE - self.flushed % WRITE_SIZE  # a buffer ends where the file's next MiB begins
            count = min(len(piece), room - self._filled)
            self._buffer[self._filled : self._filled + count] = piece[:count]
            self._filled += count
            self._buffered -= count
            if count < len(piece):
                self._chunks[0] = piece[count:]
            else:
                del self._chunks[0]
            if self._filled == room:
                self._hand_over_buffer(None)

    async def drain(self, close: bool = False) -> None:
        """Write (and hash) everything received so far, and sync it: afterwards `flushed == received`
        and those bytes are kept (the caller moves the offset).

        With `close` the file is closed after (opened first, if the body was empty: the
        staging file of every session written to exists), by the same job.
        """
        then: Then = "close" if close else "sync"
        if self._buffer is not None:
            self._hand_over_buffer(then)
        elif self._chunks or close or self._handed:
            data = b"".join(self._chunks)
            self._chunks, self._buffered = [], 0
            self._hand_over(data, then)
        await self._wait_done(self._handed)

    def held(self) -> bytes | None:
        """Every byte received, taken from the writer, when none was handed to the file (not even opened
        then), else None: a small body that completes its upload goes to the blob store from memory."""
        if self._handed:
            return None
        buffer, filled = self._buffer, self._filled
        first = [] if buffer is None else [memoryview(buffer)[:filled]]  # past GATHERED: in a buffer of the pool
        data = b"".join([*first, *self._chunks])
        self._chunks, self._buffered, self._buffer, self._filled = [], 0, None, 0
        if buffer is not None:
            BUFFERS.give(buffer)
        return data

    async def truncate(self, length: int) -> None:
        """Cut the file back to `length` (after `abandon`): drop bytes the service never acknowledged."""
        if self.file is not None:
            await asyncio.to_thread(self.file.truncate, length)

    async def abandon(self) -> None:
        """Drop what is buffered or queued and wait out the buffer being written, whatever its outcome."""
        self._chunks, self._buffered = [], 0
        with self._lock:
            dropped = [buffer for *_, buffer in self._queue if buffer is not None]
            self._queue.clear()
        if self._buffer is not None:
            dropped.append(self._buffer)
            self._buffer, self._filled = None, 0
        for buffer in dropped:
            BUFFERS.give(buffer)
        if self._job is not None and not self._job.done():
            await asyncio.wait([asyncio.wrap_future(self._job)])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    async def _free_buffer(self) -> mmap.mmap:
        """A buffer of the pool, once fewer than IN_FLIGHT of this writer's are queued; when the pool has
        none to spare, once this writer has none in flight (so it never waits on another writer)."""
        await self._wait_done(self._handed - IN_FLIGHT + 1)
        while (buffer := BUFFERS.take() if self._done == self._handed else BUFFERS.spare()) is None:
            await self._wait_done(self._done + 1)
        return buffer

    def _hand_over_buffer(self, then: Then) -> None:
        assert self._buffer is not None
        buffer, filled, self._buffer, self._filled = self._buffer, self._filled, None, 0
        self._hand_over(memoryview(buffer)[:filled], then, buffer)

    def _hand_over(self, data: bytes | memoryview, then: Then, buffer: mmap.mmap | None = None) -> None:
        offset, self.flushed = self.flushed, self.flushed + len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        with self._lock:
            self._queue.append((data, offset, then, buffer))
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
                data, offset, then, buffer = self._queue.popleft()
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
            if buffer is not None:
                BUFFERS.give(buffer)
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
