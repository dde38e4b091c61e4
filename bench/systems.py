"""The servers under test: each started as one process on a free port, watched, flushed for, stopped.

A `System` knows how to reach its server (a protocol from protocols.py), where it stores
uploads, whether it flushes a completed upload before replying, and how to read the peak
memory of its process. Systems that do not flush are flushed by the benchmark after each
upload, inside the timing: by default an fsync of exactly the files the upload consists of
and their folder, which is what the service does for its own files before it replies (a
whole-machine sync would also wait for whatever else the machine is writing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from clients import Connection
from protocols import UploadProtocol

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
SAMPLE_SECONDS = 0.02
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def slug(name: str) -> str:
    """A system's name as a file name: "@tus/server" -> "tus-server"."""
    return name.replace(" ", "-").replace("/", "-").replace("@", "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Spec:
    """How to run one system: its command and environment, and what it does with an upload."""

    name: str
    command: list[str]
    env: dict[str, str]
    protocol: UploadProtocol
    store: Path
    flushes: bool  # flushes a completed upload to disk before it replies
    suffixes: tuple[str, ...] = ("",)  # the files of one stored upload: store / (id + suffix)
    probe: str = "/healthz"  # any answer to GET of it means the server is up
    notes: str = ""
    processes: int = 1  # separate processes of the same command, sharing its store (a fleet)


@dataclass
class MemoryPeak:
    resident: int = 0  # bytes, VmHWM
    anonymous: int = 0  # bytes, the largest RssAnon sampled


@dataclass
class System:
    spec: Spec
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def connection(self, client: int = 0) -> Connection:
        return Connection(HOST, self.port)

    def stored_paths(self, stored: str) -> list[Path]:
        return [self.spec.store / f"{stored}{suffix}" for suffix in self.spec.suffixes]

    def flush(self, stored: str, whole_machine: bool = False) -> None:
        """fsync the stored upload's files and their folder, or sync the whole machine (blocking: use a thread)."""
        if whole_machine:
            os.sync()
            return
        for path in [*self.stored_paths(stored), self.spec.store]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _pids(self) -> Iterator[int]:
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            yield pid
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue

    def _status(self, field: str) -> int:
        """Bytes: a /proc/<pid>/status field added over the process and its children."""
        total = 0
        for pid in self._pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def cpu_seconds(self) -> float:
        """User and system time of the process and its children so far, all their threads."""
        total = 0
        for pid in self._pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS

    @contextlib.contextmanager
    def memory_watch(self) -> Iterator[MemoryPeak]:
        """Peak memory while the block runs: VmHWM (reset first) and anonymous memory, sampled.

        VmHWM counts file pages the process maps, which are page cache, not memory it holds;
        the anonymous peak tells them apart.
        """
        for pid in self._pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass
        peak = MemoryPeak()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(SAMPLE_SECONDS):
                peak.anonymous = max(peak.anonymous, self._status("RssAnon:"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield peak
        finally:
            stop.set()
            sampler.join()
            peak.anonymous = max(peak.anonymous, self._status("RssAnon:"))
            peak.resident = self._status("VmHWM:")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Fleet:
    """Several processes of one spec, on one store and one Redis: client n talks to process n mod their number."""

    spec: Spec
    members: list[System]

    @property
    def name(self) -> str:
        return self.spec.name

    def connection(self, client: int = 0) -> Connection:
        return self.members[client % len(self.members)].connection()

    def flush(self, stored: str, whole_machine: bool = False) -> None:
        self.members[0].flush(stored, whole_machine)

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def start_fleet(spec: Spec, logs: Path) -> System | Fleet:
    """`spec.processes` processes of the spec (one: a plain System); all stopped when one cannot start."""
    if spec.processes == 1:
        return start(spec, logs)
    members: list[System] = []
    try:
        for _ in range(spec.processes):
            members.append(start(spec, logs))
    except BaseException:
        for member in members:
            member.stop()
        raise
    return Fleet(spec, members)


def start(spec: Spec, logs: Path) -> System:
    """Start the server and wait until it answers; raises RuntimeError with its log when it cannot."""
    spec.store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = logs / f"{slug(spec.name)}.log"
    command = [part.replace("{port}", str(port)) for part in spec.command]
    env = {**os.environ, **{name: value.replace("{port}", str(port)) for name, value in spec.env.items()}}
    with open(log, "ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    system = System(spec, port, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{spec.name} exited with {process.returncode}: {_tail(log)}")
        if _answers(port, spec.probe):
            return system
        time.sleep(0.1)
    system.stop()
    raise RuntimeError(f"{spec.name} did not answer within {START_TIMEOUT:.0f} s: {_tail(log)}")


def _answers(port: int, target: str) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/1.1")
    except OSError:
        return False


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RedisServer:
    """A redis-server of the benchmark's own, without persistence, so that it may be flushed at will."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", HOST,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
                "--databases", "4",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def url(self, db: int) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def _send(self, *commands: list[str]) -> bytes:
        """Send commands in one go and return the replies (simple ones: status lines)."""
        request = "".join(
            f"*{len(words)}\r\n" + "".join(f"${len(word)}\r\n{word}\r\n" for word in words) for words in commands
        )
        with socket.create_connection((HOST, self.port), timeout=5) as sock:
            sock.sendall(request.encode())
            answer = b""
            while answer.count(b"\r\n") < len(commands):
                data = sock.recv(1024)
                if not data:
                    break
                answer += data
        return answer

    def _ping(self) -> bool:
        try:
            return self._send(["PING"]) == b"+PONG\r\n"
        except OSError:
            return False

    def flush(self, db: int) -> None:
        """Lose every key of one database, as a Redis restarted without persistence would."""
        answer = self._send(["SELECT", str(db)], ["FLUSHDB"])
        if answer != b"+OK\r\n+OK\r\n":
            raise RuntimeError(f"FLUSHDB answered {answer!r}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class RedisCluster:
    """A Redis Cluster of `primaries` redis-servers of the benchmark's own (no replicas, no persistence)."""

    def __init__(self, workdir: Path, primaries: int = 3) -> None:
        self.ports = [free_port() for _ in range(primaries)]
        self.processes: list[subprocess.Popen[bytes]] = []
        try:
            for port in self.ports:
                folder = workdir / f"redis-cluster-{port}"
                folder.mkdir(parents=True, exist_ok=True)
                self.processes.append(
                    subprocess.Popen(
                        [
                            "redis-server",
                            "--port", str(port),
                            "--bind", HOST,
                            "--save", "",
                            "--appendonly", "no",
                            "--dir", str(folder),
                            "--cluster-enabled", "yes",
                            "--cluster-config-file", str(folder / "nodes.conf"),
                            "--cluster-port", str(free_port()),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )  # fmt: skip
            self._create()
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        deadline = time.monotonic() + 30
        nodes = [f"{HOST}:{port}" for port in self.ports]
        while True:
            done = subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
            time.sleep(0.2)
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up")
            time.sleep(0.1)

    def _ready(self) -> bool:
        for port in self.ports:
            done = subprocess.run(
                ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True, check=False
            )
            if "cluster_state:ok" not in done.stdout:
                return False
        return True

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
