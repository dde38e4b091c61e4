"""The timed workloads 1 to 4, 6, 7 and 9 of the issue; 5 (listing) is in listing.py.

Runs go round-robin: each repetition visits every system before the next begins, so that a
disturbance from outside (this machine is shared) spreads over all systems instead of
landing on one; and each repetition starts one system further on, so that no system always
runs in the same place (the run after another system's 1 GiB delete was measured to be the
slow one: ext4 on this machine discards freed blocks). Before each timed upload the page cache
is written back and dropped, so no run pays for the last one's writeback; downloads read a file
already in the page cache, so they measure the servers, not the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from clients import HTTPError
from machine import drop_page_cache
from payload import Payload
from protocols import FilesAPI, OpenAIFiles, Tus, UploadProtocol
from results import Row
from systems import Fleet, System

from service.storage.blobs import BlobStore

MiB = 1024 * 1024
GiB = 1024 * MiB
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    large: int  # workloads 1, 2, 4
    chunk: int  # workload 2
    parallel: int  # workload 7: the partial uploads of one file, sent at once
    reps: int  # repetitions of workloads 1, 2, 4
    small: int  # workload 3
    small_clients: int
    small_runs: int
    small_seconds: float  # per run
    ranges: int  # workload 4
    downloads: int  # workload 4: downloads of each kind per system and repetition
    entries: int  # workload 5
    page: int
    pages: int
    rebuilds: int


@dataclass
class Bench:
    sizes: Sizes
    payload: Payload
    log: Callable[[str], None]
    notes: list[str] = field(default_factory=list)
    drop_cache: bool = True
    sync_all: bool = False  # flush a peer's upload with os.sync() rather than an fsync of its files

    def settle(self) -> None:
        """Before a timed upload: write back and drop the page cache, when permitted."""
        if self.drop_cache and not drop_page_cache():
            self.drop_cache = False
            self.notes.append("The page cache could not be dropped (not root): runs may inherit writeback.")


def rotated(systems: list[T], rep: int) -> list[T]:
    """The systems in order, starting with the rep-th: each repetition starts one further on."""
    start = rep % len(systems)
    return systems[start:] + systems[:start]


async def _timed_upload(
    bench: Bench, system: System, protocol: UploadProtocol, name: str, data: memoryview, chunk: int | None
) -> float:
    """Seconds to create and upload one file and, for a system that does not flush, to flush it."""
    async with system.connection() as connection:
        started = time.perf_counter()
        stored = await protocol.upload(connection, name, data, chunk)
        if not system.spec.flushes:
            await asyncio.to_thread(system.flush, stored, bench.sync_all)
        elapsed = time.perf_counter() - started
        await protocol.remove(connection, stored)
    return elapsed


async def large_upload(bench: Bench, systems: list[System], chunked: bool, sdk: OpenAIFiles | None = None) -> list[Row]:
    """Workload 1 (one request), 2 (chunks) or 9 (the service through the openai SDK's `files.create`, the
    other systems in one request of their own), and its part of workload 6 (peak memory)."""
    size, chunk = bench.sizes.large, bench.sizes.chunk if chunked else None
    number = "9" if sdk else "2" if chunked else "1"
    shape = f"in {chunk // MiB} MiB chunks" if chunk else "in one request"
    title = f"files.create of {_size(size)} through the openai SDK" if sdk else f"upload {_size(size)} {shape}"
    speed = Row(number, title, "MiB/s", True, note=_SDK_NOTE if sdk else "")
    resident = Row(
        "6", f"peak RSS during {number}", "MiB", False, note="VmHWM of the server process, reset before each run"
    )
    anonymous = Row(
        "6",
        f"peak anonymous memory during {number}",
        "MiB",
        False,
        note="RssAnon of the server process sampled every 20 ms: RSS without the file pages it maps",
    )
    for rep in range(bench.sizes.reps):
        for system in rotated(systems, rep):
            bench.settle()
            with system.memory_watch() as peak:
                protocol = sdk if sdk and isinstance(system.spec.protocol, FilesAPI) else system.spec.protocol
                elapsed = await _timed_upload(
                    bench, system, protocol, f"large/{number}-{rep}", bench.payload.large(), chunk
                )
            speed.add(system.name, size / MiB / elapsed)
            resident.add(system.name, peak.resident / MiB)
            anonymous.add(system.name, peak.anonymous / MiB)
            bench.log(
                f"  {number}: {system.name:<18} {size / MiB / elapsed:8.0f} MiB/s"
                f"  peak RSS {peak.resident / MiB:.0f} MiB, anonymous {peak.anonymous / MiB:.0f} MiB"
            )
    return [speed, resident, anonymous]


_SDK_NOTE = (
    "the service: `OpenAI(...).files.create(file=(name, <open file>), purpose=...)` of the `openai` SDK, which"
    " builds the multipart body and streams it (httpx, in 64 KiB pieces, from a thread of the benchmark);"
    " the other systems: the same bytes in one request of their own, as in 1"
)


async def parallel_upload(bench: Bench, systems: list[System]) -> list[Row]:
    """Workload 7: one large file as tus partial uploads sent at once on as many connections, then the
    final upload that concatenates them (tus-js-client's `parallelUploads`). A system whose OPTIONS
    does not list the concatenation extension is left out of the row, and the row says so."""
    size, count = bench.sizes.large, bench.sizes.parallel
    row = Row("7", f"upload {_size(size)} as {count} parallel tus parts", "MiB/s", True)
    offering, missing = [], []
    for system in systems:
        async with system.connection() as connection:
            protocol = system.spec.protocol
            if isinstance(protocol, Tus) and await protocol.offers_concatenation(connection):
                offering.append(system)
            else:
                missing.append(system.name)
    if missing:
        row.note = f"not offered by {', '.join(missing)} (OPTIONS lists no concatenation extension)"
    resident = Row("6", "peak RSS during 7", "MiB", False, note="VmHWM of the server process, reset before each run")
    for rep in range(bench.sizes.reps if offering else 0):
        for system in rotated(offering, rep):
            bench.settle()
            with system.memory_watch() as peak:
                elapsed = await _timed_parallel(bench, system, f"parallel/{rep}", bench.payload.large())
            row.add(system.name, size / MiB / elapsed)
            resident.add(system.name, peak.resident / MiB)
            bench.log(
                f"  7: {system.name:<18} {size / MiB / elapsed:8.0f} MiB/s  peak RSS {peak.resident / MiB:.0f} MiB"
            )
    return [row, resident]


async def _timed_parallel(bench: Bench, system: System, name: str, data: memoryview) -> float:
    """Seconds to upload one file in parallel parts and, for a system that does not flush, to flush it."""
    protocol = system.spec.protocol
    assert isinstance(protocol, Tus)
    async with contextlib.AsyncExitStack() as stack:
        connections = [await stack.enter_async_context(system.connection()) for _ in range(bench.sizes.parallel)]
        started = time.perf_counter()
        final, *partials = await protocol.upload_parallel(connections, name, data)
        if not system.spec.flushes:  # the final upload's files and the folder: the file as stored
            await asyncio.to_thread(system.flush, final, bench.sync_all)
        elapsed = time.perf_counter() - started
        await protocol.remove(connections[0], final)
        await protocol.remove_partials(connections[0], partials)
    return elapsed


async def small_files(bench: Bench, systems: list[System]) -> list[Row]:
    """Workload 3: files per second from many clients, each creating and uploading small files."""
    sizes = bench.sizes
    row = Row(
        "3",
        f"{_size(sizes.small)} files, create + upload, {sizes.small_clients} clients",
        "files/s",
        True,
        note=f"{sizes.small_runs} runs of {sizes.small_seconds:g} s per system",
    )
    client_cpu: dict[str, list[float]] = {}
    for run in range(sizes.small_runs):
        for system in rotated(systems, run):
            bench.settle()
            rate, cpu = await _small_run(bench, system, f"small/{run}")
            row.add(system.name, rate)
            client_cpu.setdefault(system.name, []).append(cpu)
            bench.log(f"  3: {system.name:<18} {rate:8.0f} files/s  (client CPU {cpu:.0%} of a core)")
    # Evidence that the client measured the servers, not itself.
    row.note += "; the client's own CPU, median share of one core: " + ", ".join(
        f"{name} {statistics.median(shares):.0%}" for name, shares in client_cpu.items()
    )
    return [row]


async def scale_out(bench: Bench, systems: list[System | Fleet]) -> list[Row]:
    """Workload 8: the small files' rate of one worker, two workers (`--workers 2`), two separate processes on
    one Redis, and one worker on a Redis Cluster of three primaries."""
    sizes = bench.sizes
    row = Row(
        "8",
        f"scale-out: {_size(sizes.small)} files, create + upload, {sizes.small_clients} clients",
        "files/s",
        True,
        note=f"{sizes.small_runs} runs of {sizes.small_seconds:g} s per system",
    )
    for run in range(sizes.small_runs):
        for system in rotated(systems, run):
            bench.settle()
            rate, _ = await _small_run(bench, system, f"scale/{run}")
            row.add(system.name, rate)
            bench.log(f"  8: {system.name:<28} {rate:8.0f} files/s")
    base = systems[0].name
    row.note += "; against one worker: " + ", ".join(
        f"{system.name} ×{ratio:.2f}" for system in systems[1:] if (ratio := row.ratio(system.name, base)) is not None
    )
    return [row]


async def _small_run(bench: Bench, system: System | Fleet, prefix: str) -> tuple[float, float]:
    """(files per second, the benchmark process's CPU seconds per second) of one run."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bench.sizes.small_seconds
    done = 0

    async def client(index: int) -> None:
        nonlocal done
        protocol = system.spec.protocol
        async with system.connection(index) as connection:
            while loop.time() < deadline:
                stored = await protocol.upload(connection, f"{prefix}/{index}/{done}", bench.payload.small(), None)
                if not system.spec.flushes:
                    await asyncio.to_thread(system.flush, stored, bench.sync_all)
                done += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(index) for index in range(bench.sizes.small_clients)))
    elapsed = time.perf_counter() - started
    return done / elapsed, (time.process_time() - cpu) / elapsed


async def downloads(bench: Bench, services: list[System], others: list[System]) -> list[Row]:
    """Workload 4: one large file downloaded whole and as concurrent ranges, from the same file on disk.

    The file is uploaded to the service (to each variant of it); the first one's blob is then
    hard-linked into each other system's folder, so they read the very same inode. Every copy
    is read once first, so that all of them are served from the page cache.

    Each system then sends the file whole once, timed in a row of its own: the service hashes a
    blob on its first whole download (the verification, once per blob and worker) and sends it
    unhashed after that, so a first download among the steady ones would pull their median down.
    A download takes half a second, which one scheduling hiccup of the shared machine can double:
    each repetition makes several of each kind per system, alternating between the systems, and
    the server's CPU seconds per GiB sent (all its threads, from /proc) are a row that the other
    work on the machine barely moves.
    """
    size, ranges = bench.sizes.large, bench.sizes.ranges
    whole = Row("4", f"download {_size(size)} whole", "MiB/s", True)
    split = Row("4", f"download {_size(size)} as {ranges} concurrent ranges", "MiB/s", True)
    first = Row(
        "4",
        f"first download of {_size(size)} whole",
        "MiB/s",
        True,
        note="the service hashes the blob as it sends it (once per blob and worker); the others send it as always",
    )
    cpu_whole = Row("4", "server CPU per GiB downloaded whole", "CPU s/GiB", False, note=_CPU_NOTE)
    cpu_split = Row("4", f"server CPU per GiB downloaded in {ranges} ranges", "CPU s/GiB", False, note=_CPU_NOTE)
    resident = Row(
        "6", "peak RSS during 4", "MiB", False, note=f"VmHWM of the server process over {ranges} concurrent ranges"
    )
    content = bench.payload.large()
    targets: dict[str, str] = {}
    blobs = []
    files = FilesAPI()
    for service in services:
        async with service.connection() as connection:
            key = await files.upload(connection, "download/source", content, None)
            blobs.append(BlobStore(service.spec.store / "blobs").path(await files.digest(connection, key)))
        targets[service.name] = files.download_target(key)
    for system in others:
        (system.spec.store / "download-source").hardlink_to(blobs[0])
        targets[system.name] = system.spec.protocol.download_target("download-source")
    for blob in blobs:
        await asyncio.to_thread(_read_through, blob)
    systems = [*services, *others]
    for system in systems:
        elapsed, _ = await _download(system, targets[system.name], size, 1)
        first.add(system.name, size / MiB / elapsed)
        bench.log(f"  4: {system.name:<18} {size / MiB / elapsed:8.0f} MiB/s whole, the first time")
    runs = bench.sizes.reps * bench.sizes.downloads
    for run in range(runs):
        for system in rotated(systems, run):
            elapsed, cpu = await _download(system, targets[system.name], size, 1)
            whole.add(system.name, size / MiB / elapsed)
            cpu_whole.add(system.name, cpu * GiB / size)
            with system.memory_watch() as peak:
                elapsed_split, cpu_split_run = await _download(system, targets[system.name], size, ranges)
            resident.add(system.name, peak.resident / MiB)
            split.add(system.name, size / MiB / elapsed_split)
            cpu_split.add(system.name, cpu_split_run * GiB / size)
            bench.log(
                f"  4: {system.name:<18} {size / MiB / elapsed:8.0f} MiB/s whole ({cpu * GiB / size:.2f} CPU s/GiB), "
                f"{size / MiB / elapsed_split:8.0f} in ranges ({cpu_split_run * GiB / size:.2f})"
            )
    return [whole, split, first, cpu_whole, cpu_split, resident]


_CPU_NOTE = "user and system time of the server process, all its threads, from /proc/<pid>/stat around each download"


async def _download(system: System, target: str, size: int, parts: int) -> tuple[float, float]:
    """(seconds, the server's CPU seconds) of one download in `parts` concurrent ranges (1: whole)."""
    step = -(-size // parts)

    async def fetch(first: int) -> None:
        last = min(first + step, size) - 1
        headers = {"Range": f"bytes={first}-{last}"} if parts > 1 else {}
        async with system.connection() as connection:
            response = await connection.request("GET", target, headers, discard=True)
        response.expect(206 if parts > 1 else 200)
        if response.received != last - first + 1:
            raise HTTPError(f"{system.name} sent {response.received} bytes of {last - first + 1}")

    cpu = system.cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(fetch(first) for first in range(0, size, step)))
    elapsed = time.perf_counter() - started
    return elapsed, system.cpu_seconds() - cpu


def _read_through(path: Path) -> None:
    with open(path, "rb", buffering=0) as file:
        while file.read(8 * MiB):
            pass


def _size(size: int) -> str:
    return (
        f"{size // 1024**3} GiB" if size >= 1024**3 else f"{size // MiB} MiB" if size >= MiB else f"{size // 1024} KiB"
    )
