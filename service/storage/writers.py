"""Writer processes: the disk work of small uploads' commits, away from the event loop's interpreter lock.

A commit of content held in memory (a whole upload of up to `MOST` bytes that came in one request)
is some twenty system calls: the blob and the entry each written to a temporary file, flushed,
renamed, and their folders flushed. On a thread of the service each of them lets go of the
interpreter's lock and takes it back from the event loop, and under load that handing over
cost more CPU than the calls themselves (docs/design.md, "Writer processes"). A process has a
lock of its own: the loop pays one message each way, and the calls run beside it on another core.

Each writer is `python -m service.storage.writers`, its own program: a commit goes down its stdin
and the outcome comes back on its stdout, each a pickle after its length, and the event loop
reads the answer as it reads a socket. Not `concurrent.futures.ProcessPoolExecutor`: its two
threads in the service (a queue's feeder, the pool's manager) hand the GIL over again for every
commit, and its queues' semaphores start multiprocessing's resource tracker, a third process
that stays as long as the service. A writer holds nothing but its pipes and its own copy of the
stores (they share nothing with the service but the volume, as another worker would), ends when
its stdin does (the service let it go, or died however it died), and the service lets its
writers go after `IDLE_SECONDS` without a commit: about 35 MiB each, held only while small
uploads come.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
from typing import Any, BinaryIO, cast

from service.core import crashpoints
from service.core.catalog import store_content
from service.core.errors import Unavailable
from service.core.model import Entry
from service.storage.blobs import BlobStore
from service.storage.entries import EntryStore

# The largest content sent to a writer (`WriterProcesses.most`): beyond it the copies of the message
# (pickled, through a pipe, unpickled) cost more CPU than the handing over of the GIL they save (measured:
# 64 KiB files 9 % faster through writers at the same CPU, 256 KiB files as fast at a quarter more CPU), so
# the catalog commits it on a thread.
MOST = 64 * 1024
IDLE_SECONDS = 10.0
LENGTH = 8  # bytes of the length before each message
STOP_SECONDS = 10.0  # how long a writer let go of may take to finish its commit and exit


class WriterProcesses:
    """The content writer port: up to `processes` writer processes for a volume's blob and entry stores,
    started as commits come and let go after `idle_seconds` without one."""

    most = MOST

    def __init__(
        self, blobs: BlobStore, entries: EntryStore, processes: int, idle_seconds: float = IDLE_SECONDS
    ) -> None:
        self.blobs = blobs
        self.entries = entries
        self.processes = processes
        self.idle_seconds = idle_seconds
        self._free: list[Writer] = []  # started and waiting for a commit
        self._slots: asyncio.Semaphore | None = None  # one per writer there may be
        self._storing = 0
        self._idle: asyncio.TimerHandle | None = None
        self._ending: set[asyncio.Future[None]] = set()  # writers let go of, until they have ended

    async def store(self, entry: Entry, content: bytes) -> tuple[bool, Entry | None]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.processes)
        async with self._slots:
            self._storing += 1
            try:
                writer = await self._writer()
                try:
                    stored, outcome = await writer.store(entry, content)
                except BaseException:
                    self._let_go(writer)  # dead, or cut off mid-answer: its next answer would be this one's
                    raise
                self._free.append(writer)
            finally:
                self._storing -= 1
                self._rearm()
        if not stored:
            raise cast(Exception, outcome)
        return cast(tuple[bool, Entry | None], outcome)

    async def close(self) -> None:
        """Let the writers go once they have finished what they were given, and wait for them to end."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._let_go_free()
        await asyncio.gather(*self._ending)

    async def _writer(self) -> Writer:
        while self._free:
            writer = self._free.pop()
            if writer.alive():
                return writer
            self._let_go(writer)
        return await Writer.start(self.blobs, self.entries)

    def _let_go(self, writer: Writer) -> None:
        """Close the writer's stdin and reap it once it ends (kept till then: asyncio kills the process of
        a transport it collects)."""
        writer.let_go()
        ending = asyncio.ensure_future(writer.ended())
        self._ending.add(ending)
        ending.add_done_callback(self._ending.discard)

    def _rearm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.idle_seconds, self._let_go_if_idle)

    def _let_go_if_idle(self) -> None:
        self._idle = None
        if self._storing == 0:
            self._let_go_free()

    def _let_go_free(self) -> None:
        """Let go of every writer waiting for a commit."""
        writers, self._free = self._free, []
        for writer in writers:
            self._let_go(writer)


class Writer:
    """One writer process, spoken to by one commit at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, blobs: BlobStore, entries: EntryStore) -> Writer:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service.storage.writers",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        writer = cls(process)
        writer._send((blobs, entries, os.getpid()))
        return writer

    async def store(self, entry: Entry, content: bytes) -> tuple[bool, object]:
        """`store_content` in the writer: (True, what it returned) or (False, the error it raised)."""
        assert self.process.stdout is not None
        try:
            self._send((entry, content))
            length = int.from_bytes(await self.process.stdout.readexactly(LENGTH))
            answer: tuple[bool, object] = pickle.loads(await self.process.stdout.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            raise Unavailable(
                "a writer process died while it stored this upload; retry (the sweep settles what it left)"
            ) from None
        return answer

    def alive(self) -> bool:
        """Whether it is still there, as far as the event loop has seen (it reads the end of its stdout at once)."""
        assert self.process.stdout is not None
        return self.process.returncode is None and not self.process.stdout.at_eof()

    def let_go(self) -> None:
        """Close its stdin: it ends after the commit it has, if any."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()

    async def ended(self) -> None:
        try:
            await asyncio.wait_for(self.process.wait(), STOP_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    def _send(self, message: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(_framed(message))


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """A writer's life: the stores and the service's pid, then commits, each answered, until the end of
    `requests`. A crash point reached here kills the service too: it stands for the service dying there."""
    blobs, entries, service = _read(requests)
    crashpoints.die_with(service)
    while (message := _read(requests)) is not None:
        entry, content = message
        try:
            answer: tuple[bool, object] = (True, store_content(blobs, entries, None, entry, content))
        except Exception as error:
            answer = (False, error)
        answers.write(_framed(answer))
        answers.flush()


def _framed(message: object) -> bytes:
    """`message` as it goes down a pipe: pickled, after its length."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(LENGTH) + data


def _read(stream: BinaryIO) -> Any:
    """The next message, or None at the end of `stream`."""
    header = stream.read(LENGTH)
    if len(header) < LENGTH:
        return None
    return pickle.loads(stream.read(int.from_bytes(header)))


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group: the service's to handle, which then lets its
    # writers go. The answers get a descriptor of their own, so that nothing printed can get in their way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, answers)
