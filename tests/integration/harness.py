"""The integration harness: real `redis-server` and `files-service` processes, and waiting with deadlines.

Every process is started in its own process group with its output in a log file, and
is stopped (SIGTERM to the group, then SIGKILL) by whoever started it. Nothing here
sleeps except between the tries of a poll that has a deadline (`wait_for`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import httpx
import pytest
import redis
from blake3 import blake3

T = TypeVar("T")

MiB = 1024 * 1024
OCTET_STREAM = "application/octet-stream"
STARTUP_SECONDS = 30.0
STOP_SECONDS = 5.0
POLL_SECONDS = 0.05
HTTP_TIMEOUT = httpx.Timeout(30.0)
# What every service process gets unless a test says otherwise: short leases and frequent sweeps,
# so that the behaviours the contract bounds by "within 30 s" or "within a minute" show up quickly.
SERVICE_DEFAULTS = {
    "FILES_LOCK_LEASE_SECONDS": "2",
    "FILES_SWEEP_INTERVAL_SECONDS": "0.5",
}


# --- waiting and skipping ---------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip for want of something outside the project; under CI (CI set) fail instead: CI must run these."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure rather than a skip)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `check` until it returns something truthy, and return that; fail after `timeout` seconds.

    Exceptions of the types in `ignore` count as "not yet"; any other propagates at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except ignore as error:
            last = error
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what} (last seen: {last!r})")
        time.sleep(POLL_SECONDS)


def b3(data: bytes) -> str:
    return blake3(data).hexdigest()


def peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


# --- processes --------------------------------------------------------------------------------


class ManagedProcess:
    """A child process in its own process group, its stdout and stderr in `log_path`."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.ended = False  # stopped or killed, its whole group with it

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- {self.name}: {' '.join(self.args)}\n".encode())
            log.flush()
            self.ended = False
            self.process = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.log_path.parent,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Fail at once (not at a deadline) when the process has already exited."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with status {self.process.returncode}; its output:\n{self.log_tail()}"
            )

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def terminate(self) -> None:
        """SIGTERM to the whole process group, without waiting."""
        self._signal_group(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole process group, and reap the process."""
        if self.process is None or self.ended:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=STOP_SECONDS)
        self.ended = True

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not stopped within STOP_SECONDS; children go with it."""
        if self.process is None or self.ended:
            return
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (workers of a supervisor that died, a hung shutdown) goes too.
        self.kill()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, characters: int = 20000) -> str:
        return self.log_text()[-characters:]

    def children(self) -> dict[int, str]:
        """The direct children of this process, pid -> command line (Linux /proc)."""
        if not Path("/proc/self/stat").exists():
            pytest.skip("needs /proc to see the processes of a service")
        found = {}
        for entry in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                # The fields after the ")" that ends the command name: state, ppid, ...
                if int(entry.read_text().rsplit(")", 1)[1].split()[1]) == self.pid:
                    found[int(entry.parent.name)] = (entry.parent / "cmdline").read_text().replace("\0", " ")
        return found


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class RedisServer(ManagedProcess):
    """A throwaway redis-server on a free port, no persistence unless `persistent` (an append-only file
    written before each reply, so a killed server restarts with every write it acknowledged): a test
    may flush, kill or restart it. `replica_of`: the port of the primary it replicates."""

    def __init__(
        self,
        directory: Path,
        log_path: Path,
        port: int | None = None,
        persistent: bool = False,
        replica_of: int | None = None,
        clustered: bool = False,
    ) -> None:
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not on PATH"
        self.port = port or free_port()
        self.directory = directory
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if persistent else "no",
            "--appendfsync", "always",
            "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
            "--daemonize", "no",
            "--dir", str(directory),
        ]  # fmt: skip
        self.replica_of = replica_of
        if clustered:
            # A node silent for a second is failed over: quick, for tests that kill one.
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf")]
            args += ["--cluster-node-timeout", "1000", "--cluster-port", str(free_port())]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        super().__init__(f"redis-server:{self.port}", args, log_path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.launch()
        wait_for(self._answers, STARTUP_SECONDS, f"{self.name} to answer PING", ignore=(redis.RedisError,))
        if self.replica_of is not None:
            wait_for(self._in_sync, STARTUP_SECONDS, f"{self.name} to hold a copy of its primary")
        return self

    def _in_sync(self) -> bool:
        self.check_alive()
        with contextlib.closing(self.client()) as client:
            return client.info("replication")["master_link_status"] == "up"

    def restart(self) -> None:
        """Kill it (no persistence: its data is gone) and start it again on the same port."""
        self.kill()
        self.start()

    def _answers(self) -> bool:
        self.check_alive()
        with contextlib.closing(self.client()) as client:
            return bool(client.ping())


class ClusterServers:
    """A Redis Cluster of `primaries` nodes with a replica each, made with `redis-cli --cluster create`."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def create(self) -> ClusterServers:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        command = ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(self.healthy, STARTUP_SECONDS, "every cluster node to see every slot served")
        return self

    def client(self) -> redis.RedisCluster:
        node = next(node for node in self.nodes if node.running())
        return redis.RedisCluster(host="127.0.0.1", port=node.port, decode_responses=True, socket_timeout=5)

    def roles(self) -> dict[int, tuple[str, str | None]]:
        """port -> ('master' or 'slave', the node id of its primary) as a live node sees the cluster."""
        node = next(node for node in self.nodes if node.running())
        with contextlib.closing(node.client()) as client:
            text = client.execute_command("CLUSTER", "NODES")
        lines = [line.split() for line in (text if isinstance(text, str) else text.decode()).splitlines() if line]
        found = {}
        for fields in lines:
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            role = "master" if "master" in fields[2] else "slave"
            failed = "fail" in fields[2] and "fail?" not in fields[2]
            found[port] = (role if not failed else "failed", fields[0] if role == "master" else fields[3])
        return found

    def primaries(self) -> list[RedisServer]:
        roles = self.roles()
        return [node for node in self.nodes if roles.get(node.port, ("",))[0] == "master" and node.running()]

    def replica_of(self, primary: RedisServer) -> RedisServer:
        roles = self.roles()
        primary_id = roles[primary.port][1]
        return next(node for node in self.nodes if roles[node.port] == ("slave", primary_id))

    def healthy(self) -> bool:
        """Every live node says the cluster is ok (every slot served) and sees three live primaries."""
        for node in self.nodes:
            if not node.running():
                continue
            with contextlib.closing(node.client()) as client:
                if client.execute_command("CLUSTER", "INFO").split("cluster_state:")[1][:2] != "ok":
                    return False
        return len(self.primaries()) == len(self.nodes) // 2

    def in_sync(self) -> bool:
        """Every replica's link to its primary is up."""
        for node in self.nodes:
            with contextlib.closing(node.client()) as client:
                replication = client.info("replication")
            if replication["role"] == "slave" and replication["master_link_status"] != "up":
                return False
        return True


class SentinelServer(ManagedProcess):
    """A Redis Sentinel on a free port watching the primary `master` on `primary_port`, quick to act:
    a primary silent for `down_after_ms` is down, and a failover that stalls is tried again soon."""

    def __init__(
        self, directory: Path, log_path: Path, master: str, primary_port: int, quorum: int, down_after_ms: int = 1000
    ) -> None:
        binary = redis_server_binary()
        assert binary is not None, "redis-server is not on PATH"
        self.port = free_port()
        self.master = master
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # Sentinel rewrites it with what it learns
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {directory}\n"
            f"sentinel monitor {master} 127.0.0.1 {primary_port} {quorum}\n"
            f"sentinel down-after-milliseconds {master} {down_after_ms}\n"
            f"sentinel failover-timeout {master} 3000\n"
            f"sentinel parallel-syncs {master} 1\n"
        )
        super().__init__(f"redis-sentinel:{self.port}", [binary, str(config), "--sentinel"], log_path)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)

    def master_port(self) -> int | None:
        with contextlib.closing(self.client()) as client:
            address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
        return int(address[1]) if address else None

    def sees(self, sentinels: int, replicas: int) -> bool:
        """Whether it knows the other Sentinels and the replicas (learnt every few seconds), so it can fail over."""
        self.check_alive()
        with contextlib.closing(self.client()) as client:
            state = client.execute_command("SENTINEL", "MASTER", self.master)
        fields = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else state
        return int(fields["num-other-sentinels"]) >= sentinels - 1 and int(fields["num-slaves"]) >= replicas

    def start(self) -> SentinelServer:
        self.launch()
        wait_for(self._answers, STARTUP_SECONDS, f"{self.name} to answer PING", ignore=(redis.RedisError,))
        return self

    def _answers(self) -> bool:
        self.check_alive()
        with contextlib.closing(self.client()) as client:
            return bool(client.ping())


def service_environment(data_dir: Path, redis_url: str | None, prefix: str, **overrides: str) -> dict[str, str]:
    """This process's environment without any FILES_* variable, plus the service settings of a test."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("FILES_")}
    env.update(SERVICE_DEFAULTS)
    env.update(PYTHONUNBUFFERED="1", FILES_DATA_DIR=str(data_dir), FILES_REDIS_PREFIX=prefix)
    if redis_url is not None:
        env["FILES_REDIS_URL"] = redis_url
    env.update({name: str(value) for name, value in overrides.items()})
    return env


def service_command(*arguments: str) -> list[str]:
    """`files-service ...` run by this interpreter, so it works in whatever environment runs pytest."""
    return [sys.executable, "-m", "service", *arguments]


class ServiceProcess(ManagedProcess):
    """`files-service serve` on a free port of 127.0.0.1."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.data_dir = Path(env["FILES_DATA_DIR"])
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
            # In the test's own folder rather than a temporary one of the service's: a process the
            # test kills with SIGKILL cannot remove its own, and they would pile up in /tmp.
            metrics = log_path.with_name(f"{log_path.stem}-metrics")
            metrics.mkdir(parents=True, exist_ok=True)
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        args = service_command("serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers))
        super().__init__(name, args, log_path, env)
        self._clients: list[FilesClient] = []
        self._api: FilesClient | None = None

    def wait_ready(self) -> ServiceProcess:
        wait_for(self._healthy, STARTUP_SECONDS, f"{self.name} to answer /healthz", ignore=(httpx.TransportError,))
        return self

    def _healthy(self) -> bool:
        self.check_alive()
        return httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200

    @property
    def api(self) -> FilesClient:
        """A client kept for the life of the process (keep-alive connections)."""
        if self._api is None:
            self._api = self.client()
        return self._api

    def client(self, keep_alive: bool = True) -> FilesClient:
        """A new client, for a thread of its own or for a fresh connection per request."""
        client = FilesClient(self.base_url, keep_alive=keep_alive)
        self._clients.append(client)
        return client

    def worker_pids(self) -> list[int]:
        """The worker processes of a `--workers N` supervisor (multiprocessing's spawned children)."""
        return sorted(pid for pid, command in self.children().items() if "spawn_main" in command)

    def stop(self) -> None:
        for client in self._clients:
            client.close()
        super().stop()


class Launcher:
    """Starts the processes of one test and stops every one of them at its end, whatever happened."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[ManagedProcess] = []

    def log_path(self, name: str) -> Path:
        return self.directory / "logs" / f"{len(self.processes):02d}-{name.replace(':', '-')}.log"

    def track(self, process: ManagedProcess) -> None:
        self.processes.append(process)

    def redis(self, persistent: bool = False, replica_of: int | None = None) -> RedisServer:
        server = RedisServer(
            self.directory / f"redis-{len(self.processes)}",
            self.log_path("redis"),
            persistent=persistent,
            replica_of=replica_of,
        )
        self.track(server)
        return server.start()

    def cluster(self, primaries: int = 3) -> ClusterServers:
        """A Redis Cluster of `primaries` nodes with a replica each, every slot served."""
        nodes = []
        for _ in range(primaries * 2):
            server = RedisServer(
                self.directory / f"redis-{len(self.processes)}", self.log_path("redis-node"), clustered=True
            )
            self.track(server)
            nodes.append(server.start())
        return ClusterServers(nodes).create()

    def sentinel(self, master: str, primary_port: int, quorum: int) -> SentinelServer:
        sentinel = SentinelServer(
            self.directory / f"sentinel-{len(self.processes)}", self.log_path("sentinel"), master, primary_port, quorum
        )
        self.track(sentinel)
        return sentinel.start()

    def services(
        self, count: int, env: dict[str, str], workers: int = 1, name: str = "service"
    ) -> list[ServiceProcess]:
        """Start `count` service processes with this environment at once, and wait until all answer."""
        started = []
        for number in range(count):
            label = f"{name}-{number + 1}" if count > 1 else name
            process = ServiceProcess(label, env, self.log_path(label), workers)
            self.track(process)
            process.launch()
            started.append(process)
        for process in started:
            process.wait_ready()
        return started

    def command(self, name: str, args: list[str], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(name, args, self.log_path(name), env)
        self.track(process)
        process.launch()
        return process

    def stop_all(self) -> None:
        """Stop in reverse order (services before the Redis they use); every one, even if one fails."""
        errors = []
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception as error:  # noqa: BLE001 - keep stopping the others
                errors.append(f"{process.name}: {error!r}")
        assert not errors, f"could not stop: {errors}"


# --- the HTTP API -----------------------------------------------------------------------------


class UnexpectedStatus(AssertionError):
    """A response with another status than the test expected."""


def expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        raise UnexpectedStatus(
            f"{response.request.method} {response.request.url} answered {response.status_code}, "
            f"expected {status}: {response.text[:1000]}"
        )
    return response


def assert_content(response: httpx.Response, content: bytes) -> None:
    """A download of exactly `content`: the bytes, their length and BLAKE3, and the ETag."""
    expect(response, 200)
    assert len(response.content) == len(content), f"downloaded {len(response.content)} bytes, stored {len(content)}"
    assert b3(response.content) == b3(content), "the downloaded bytes differ from the uploaded ones"
    identical = response.content == content
    assert identical, "the downloaded bytes differ from the uploaded ones"
    assert response.headers["etag"] == f'"{b3(content)}"'
    assert int(response.headers["content-length"]) == len(content)


class FilesClient:
    """The contract's routes for tests; the helpers that return JSON check the status first."""

    def __init__(self, base_url: str, keep_alive: bool = True) -> None:
        limits = httpx.Limits() if keep_alive else httpx.Limits(max_keepalive_connections=0)
        self.http = httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT, limits=limits)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FilesClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create(self, bucket: str, key: str, size: int, mime_type: str = OCTET_STREAM, **extra: object) -> dict:
        body = {"bucket": bucket, "key": key, "mime_type": mime_type, "size": size, **extra}
        return expect(self.http.post("/v1/files", json=body), 200).json()

    def send(
        self,
        session_id: str,
        body: bytes | Iterable[bytes],
        offset: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST content to a session, whatever the answer."""
        headers = dict(headers or {})
        if offset is not None:
            headers["Upload-Offset"] = str(offset)
        return self.http.post(f"/v1/files/session:{session_id}", content=body, headers=headers)

    def chunk(self, session_id: str, data: bytes, offset: int | None) -> dict:
        return expect(self.send(session_id, data, offset), 200).json()

    def session(self, session_id: str) -> httpx.Response:
        return self.http.get(f"/v1/files/session:{session_id}")

    def offset(self, session_id: str) -> int:
        return expect(self.session(session_id), 200).json()["offset"]

    def upload(self, bucket: str, key: str, content: bytes, chunk_size: int | None = None, **extra: object) -> dict:
        """A whole upload through this process; returns the FileResponse."""
        created = self.create(bucket, key, len(content), **extra)
        if not content:
            return created
        result, offset = created, 0
        for piece in pieces(content, chunk_size or len(content)):
            result = self.chunk(created["id"], piece, offset)
            offset += len(piece)
        return result

    def content(self, bucket: str, key: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.get(f"/v1/files/{bucket}/{key}:content", headers=headers)

    def info(self, bucket: str, key: str) -> httpx.Response:
        return self.http.get(f"/v1/files/{bucket}/{key}")

    def delete(self, bucket: str, key: str) -> httpx.Response:
        return self.http.delete(f"/v1/files/{bucket}/{key}")

    def buckets(self) -> list[str]:
        return [bucket["name"] for bucket in expect(self.http.get("/v1/files"), 200).json()["data"]]

    def files(self, bucket: str) -> list[dict]:
        page = expect(self.http.get(f"/v1/files/{bucket}", params={"limit": 10000}), 200).json()
        assert page["has_more"] is False
        return page["data"]

    def keys(self, bucket: str) -> list[str]:
        return [entry["key"] for entry in self.files(bucket)]

    def listing(self) -> dict[str, list[str]]:
        """Every bucket and its keys, as listed."""
        return {bucket: self.keys(bucket) for bucket in self.buckets()}


# --- Redis keyspace events ----------------------------------------------------------------------


class KeyWatcher:
    """Collects the name of every key Redis reports an event for (keyspace notifications), until stopped."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client  # kept: when it is collected its pool disconnects, the subscription with it
        client.config_set("notify-keyspace-events", "KEA")
        self.pubsub = client.pubsub()
        self.pubsub.psubscribe("__keyevent@*__:*")
        confirmation = self.pubsub.get_message(timeout=5)
        assert confirmation is not None and confirmation["type"] == "psubscribe", confirmation
        self.keys: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="redis-key-watcher", daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            message = self.pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "pmessage":
                self.keys.add(message["data"])

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(timeout=5)
        self.pubsub.close()
        self.client.close()
        return set(self.keys)


# --- the data volume ----------------------------------------------------------------------------


def files_under(directory: Path) -> list[Path]:
    """Every regular file below `directory`, sorted; empty when it does not exist."""
    if not directory.exists():
        return []
    return sorted(path for path in directory.rglob("*") if path.is_file())


# --- uploads that take their time ---------------------------------------------------------------


class SlowUpload:
    """Sends `data` to a session from a thread of its own, a piece at a time, with its Content-Length.

    It holds back the last byte, so the chunk never completes: the test ends it with `stop()`
    (or by stopping the service), and `outcome()` is the response or the exception the client got.
    """

    def __init__(self, process: ServiceProcess, session_id: str, data: bytes, offset: int, pace: float = 0.01) -> None:
        self.process = process
        self.session_id = session_id
        self.data = data
        self.offset = offset
        self.pace = pace
        self._stop = threading.Event()
        self._outcome: list[httpx.Response | Exception] = []
        self._thread = threading.Thread(target=self._send, name="slow-upload", daemon=True)

    def __enter__(self) -> SlowUpload:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._thread.join(timeout=30)

    def _body(self) -> Iterator[bytes]:
        for piece in pieces(self.data[:-1], 32 * 1024):
            if self._stop.wait(self.pace):
                return
            yield piece
        self._stop.wait(60)

    def _send(self) -> None:
        with self.process.client() as client:
            try:
                headers = {"Content-Length": str(len(self.data))}
                self._outcome.append(client.send(self.session_id, self._body(), self.offset, headers))
            except Exception as error:  # noqa: BLE001 - a broken connection, or h11 refusing a short body
                self._outcome.append(error)

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def outcome(self, timeout: float = 30) -> httpx.Response | Exception:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the slow upload did not end"
        return self._outcome[0]


@contextlib.contextmanager
def streaming_second_chunk(
    process: ServiceProcess, content: bytes, first_chunk: int, timeout: float
) -> Iterator[tuple[str, SlowUpload, int]]:
    """An upload of `content` to crash/resumed.bin: its first `first_chunk` bytes acknowledged, the rest
    streaming in slowly as a second chunk, handed over once the offset has moved past the first (while
    a body with a declared length streams in, the offset moves past what is written): (the session id,
    the streaming upload, that offset)."""
    session_id = process.api.create("crash", "resumed.bin", len(content))["id"]
    assert process.api.chunk(session_id, content[:first_chunk], offset=0)["offset"] == first_chunk
    with SlowUpload(process, session_id, content[first_chunk:], first_chunk) as upload:
        checkpoint = wait_for(
            lambda: (offset := process.api.offset(session_id)) > first_chunk and offset,
            timeout,
            "the offset to move while the second chunk streams in",
        )
        yield session_id, upload, checkpoint


def resume(process: ServiceProcess, session_id: str, content: bytes, timeout: float) -> dict:
    """Send the rest of `content` from the offset the service reports, retrying while the session is busy."""
    offset = process.api.offset(session_id)

    def attempt() -> dict | None:
        response = process.api.send(session_id, content[offset:], offset=offset)
        if response.status_code == 409 and response.json().get("code") == "session_busy":
            return None  # a lock left behind: its lease has not run out yet
        return expect(response, 200).json()

    return wait_for(attempt, timeout, f"{process.name} to accept the rest of the upload from offset {offset}")
