"""A/B of two versions of the service (and the ceiling) on uploads in chunks, with the CPU each thread spends.

    python bench/ab.py --redis redis://127.0.0.1:PORT/0 [--rounds 12] [--size-mib 256] [--chunk-kib 8192]
                       [--tus] old=/path/to/old/tree new=. [ceiling]

Each `name=tree` runs `python -m service serve` from that source tree (a `git worktree` or a `git
archive` of the commit to compare), on the given Redis (your own redis-server: every run has a
prefix of its own, nothing is flushed) and a fresh data folder; `ceiling` runs bench/ceiling.py with
the tuned allocator. The rounds alternate the systems, each round in the opposite order to the last,
so that a disturbance from outside (this machine is shared) lands on all of them, not on one.

Per upload it reads every thread's time on a CPU from /proc/<pid>/task/<tid>/schedstat (ns, where
/proc's stat counts ticks of 10 ms), before and after: CPU per chunk of the whole process and of the
event loop's thread, which load elsewhere inflates far less than throughput. It also times each
request on the client: the chunks' median, and the last one (the commit, with its fsync). The
server pids are printed at the start, for py-spy or `strace -c -f -p` to attach to.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients import Connection
from payload import Payload
from protocols import Ceiling, FilesAPI, ServiceTus, UploadProtocol
from systems import HOST, free_port

BENCH = Path(__file__).resolve().parent
MiB = 1024 * 1024
TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"
START_TIMEOUT = 30.0


@dataclass
class Runner:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    protocol: UploadProtocol
    rows: list[dict[str, float]] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)  # every chunk's but the last, seconds
    last: list[float] = field(default_factory=list)


def thread_seconds(pid: int) -> dict[int, float]:
    """Each thread's time on a CPU so far, by thread id."""
    times = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                times[int(task)] = int(stat.read().split()[0]) / 1e9
        except OSError:  # the thread ended meanwhile
            continue
    return times


def start(name: str, tree: str | None, redis_url: str, tus: bool, work: Path) -> Runner:
    port = free_port()
    store = work / name
    store.mkdir(parents=True)
    if tree is None:
        command = [sys.executable, str(BENCH / "ceiling.py"), "--port", str(port), "--dir", str(store)]
        env = {**os.environ, "GLIBC_TUNABLES": TUNED}
        protocol: UploadProtocol = Ceiling()
    else:
        command = [sys.executable, "-m", "service", "serve", "--port", str(port)]
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(tree).resolve()),
            "FILES_LOG_LEVEL": "warning",
            "FILES_REDIS_URL": redis_url,
            "FILES_REDIS_PREFIX": f"ab-{os.getpid()}-{name}:",
            "FILES_DATA_DIR": str(store),
        }
        protocol = ServiceTus() if tus else FilesAPI()
    with open(work / f"{name}.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=tree or work, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=1) as probe:
                probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: ab\r\nConnection: close\r\n\r\n")
                if probe.recv(16).startswith(b"HTTP/1.1"):
                    return Runner(name, process, port, protocol)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not start: see {work / name}.log")


async def upload(runner: Runner, payload: Payload, chunk: int, label: str) -> tuple[float, list[float]]:
    """Upload once, then remove it: the seconds it took and each request's."""
    data = payload.large()
    async with Connection(HOST, runner.port) as connection:
        plain = connection.request
        times: list[float] = []

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await plain(*args, **kwargs)
            finally:
                times.append(time.perf_counter() - started)

        connection.request = timed  # type: ignore[method-assign]
        started = time.perf_counter()
        stored = await runner.protocol.upload(connection, label, data, chunk)
        elapsed = time.perf_counter() - started
        connection.request = plain  # type: ignore[method-assign]
        await runner.protocol.remove(connection, stored)
    return elapsed, times


async def measure(runner: Runner, payload: Payload, chunk: int, label: str, chunks: int, size: int) -> str:
    pid = runner.process.pid
    before = thread_seconds(pid)
    elapsed, times = await upload(runner, payload, chunk, label)
    after = thread_seconds(pid)
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = spent.pop(pid, 0.0)
    busiest = max(spent.values(), default=0.0)
    row = {
        "mib_s": size / MiB / elapsed,
        "cpu": (loop + sum(spent.values())) / chunks * 1000,
        "loop": loop / chunks * 1000,
        "busiest": busiest / chunks * 1000,
    }
    runner.rows.append(row)
    runner.requests.extend(times[-chunks:-1])
    runner.last.append(times[-1])
    return (
        f"{runner.name:>10} {row['mib_s']:7.1f} MiB/s  CPU per chunk {row['cpu']:6.2f} ms"
        f" (loop {row['loop']:.2f}, busiest other thread {row['busiest']:.2f})"
    )


def summary(runner: Runner) -> str:
    def median(key: str) -> float:
        return statistics.median(row[key] for row in runner.rows)

    with open(f"/proc/{runner.process.pid}/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    request = statistics.median(runner.requests) * 1000 if runner.requests else float("nan")  # one request: none
    last = statistics.median(runner.last) * 1000
    return (
        f"{runner.name:>10} {median('mib_s'):7.1f} MiB/s  CPU per chunk {median('cpu'):6.2f} ms"
        f" (min {min(row['cpu'] for row in runner.rows):.2f}), loop {median('loop'):.2f}"
        f"  request {request:.2f} ms, last {last:.1f} ms"
        f"  VmHWM {peak / 1024:.1f} MiB"
    )


async def run(arguments: argparse.Namespace, work: Path) -> None:
    runners: list[Runner] = []
    try:
        for system in arguments.systems:
            name, _, tree = system.partition("=")
            if tree and arguments.redis is None:
                raise SystemExit("--redis is needed to run the service")
            runners.append(start(name, tree or None, arguments.redis, arguments.tus, work))
            print(f"{name}: pid {runners[-1].process.pid}", flush=True)
        size, chunk = arguments.size_mib * MiB, arguments.chunk_kib * 1024
        chunks = -(-size // chunk)
        payload = Payload(size, 0)
        for runner in runners:  # warm-up, not counted
            await upload(runner, payload, chunk, f"warm-{runner.name}")
        for number in range(arguments.rounds):
            for runner in runners if number % 2 == 0 else runners[::-1]:
                line = await measure(runner, payload, chunk, f"r{number}-{runner.name}", chunks, size)
                print(f"r{number:<3}{line}", flush=True)
        print("medians:")
        for runner in runners:
            print(summary(runner))
    finally:
        for runner in runners:
            runner.process.terminate()
        for runner in runners:
            runner.process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("systems", nargs="+", help="name=source tree of the service, or ceiling")
    parser.add_argument("--redis", help="the Redis URL the service versions use (your own redis-server)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-kib", type=int, default=8192)
    parser.add_argument("--tus", action="store_true", help="upload through the service's tus front (PATCH per chunk)")
    arguments = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="files-ab-"))
    try:
        asyncio.run(run(arguments, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
