"""Running the service: the command line, the embedded stand-in, several workers, Redis keys."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from .harness import (
    KeyWatcher,
    MiB,
    assert_content,
    expect,
    free_port,
    service_command,
    service_environment,
    wait_for,
)


def console_script() -> list[str]:
    """`files-service` as installed next to this interpreter; skipped where it is not installed."""
    script = shutil.which("files-service", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip(f"no files-service console script next to {sys.executable}")
    return [script]


@pytest.mark.parametrize("command", ["python -m service", "files-service"])
def test_several_workers_without_redis_refuse_to_start(launcher, data_dir, command: str) -> None:
    program = service_command() if command == "python -m service" else console_script()
    env = service_environment(data_dir, None, "files-itest:")
    process = launcher.command(
        "workers-without-redis", [*program, "serve", "--workers", "2", "--port", str(free_port())], env
    )
    status = process.wait_exit(timeout=30)
    assert status != 0
    output = process.log_text()
    assert "FILES_REDIS_URL" in output and "--workers" in output, output
    assert "Traceback" not in output, "a configuration error deserves a message, not a traceback"


def test_one_process_without_redis_says_it_uses_the_embedded_stand_in(services) -> None:
    service = services.start(redis_url=None)
    wait_for(lambda: "embedded" in service.log_text().lower(), 10, "a log line about the embedded Redis stand-in")
    content = os.urandom(300_000)
    service.api.upload("solo", "a/b.bin", content, chunk_size=100_000)
    assert_content(service.api.content("solo", "a/b.bin"), content)
    assert service.api.listing() == {"solo": ["a/b.bin"]}
    expect(service.api.http.get("/readyz"), 200)


def test_python_dash_m_service_serves_the_api(services) -> None:
    service = services.start()
    assert service.args[1:4] == ["-m", "service", "serve"]
    expect(service.api.http.get("/healthz"), 200)
    expect(service.api.http.get("/readyz"), 200)
    assert expect(service.api.http.get("/openapi.json"), 200).json()["openapi"].startswith("3.")


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator tunables exist on Linux only")
def test_the_serving_process_runs_with_the_allocator_tuned_from_its_start(services) -> None:
    """`serve` starts itself again with GLIBC_TUNABLES set (same process id); the measured speed-up
    of large bodies depends on it (service/ops/tuning.py)."""
    service = services.start()
    expect(service.api.http.get("/healthz"), 200)
    environment = Path(f"/proc/{service.pid}/environ").read_bytes()
    assert b"glibc.malloc.mmap_threshold=33554432" in environment
    assert b"glibc.malloc.trim_threshold=268435456" in environment


def test_two_workers_on_redis_serve_requests(services) -> None:
    service = services.start(workers=2)
    wait_for(lambda: len(service.worker_pids()) == 2, 20, "two worker processes")
    content = os.urandom(2 * MiB + 11)
    # A new connection for every request, so that both workers take a share.
    with service.client(keep_alive=False) as api:
        api.upload("workers", "two.bin", content, chunk_size=128 * 1024)
        for _ in range(4):
            assert_content(api.content("workers", "two.bin"), content)
            assert api.keys("workers") == ["two.bin"]


def test_sigterm_stops_the_service_cleanly(services) -> None:
    service = services.start()
    service.api.upload("stop", "file.bin", os.urandom(100_000))
    service.terminate()
    assert service.wait_exit(timeout=15) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in service.log_text()


@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_the_writer_processes_end_with_the_service(services, ending: signal.Signals) -> None:
    """A small upload starts the writer processes (FILES_WRITER_PROCESSES); they end when the service
    stops, and when it is killed alone (SIGKILL to its pid, not its group: nothing could let them go)."""
    service = services.start()
    service.api.upload("writers", "small.bin", os.urandom(1000))
    writers = [pid for pid, command in service.children().items() if "service.storage.writers" in command]
    assert writers, f"no writer process among {service.children()}"
    os.kill(service.pid, ending)
    assert service.wait_exit(timeout=15) in (0, -ending)
    wait_for(lambda: not any(_alive(pid) for pid in writers), 20, f"the writers {writers} to end")


def _alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie, exited but not yet reaped, has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_every_redis_key_starts_with_the_prefix(services, own_redis, data_dir, redis_prefix) -> None:
    watcher = KeyWatcher(own_redis.client())
    try:
        a, b = services.start_many(2, redis_url=own_redis.url)
        content = os.urandom(MiB + 5)
        session_id = a.api.create("keys", "chunked.bin", len(content))["id"]
        a.api.chunk(session_id, content[:MiB], offset=0)
        expect(b.api.send(session_id, b"x", offset=0), 409)
        b.api.chunk(session_id, content[MiB:], offset=MiB)
        b.api.upload("keys", "empty", b"")
        b.api.upload("other", "copy.bin", content)
        assert a.api.listing() == {"keys": ["chunked.bin", "empty"], "other": ["copy.bin"]}
        expect(a.api.delete("keys", "chunked.bin"), 200)
        expect(a.api.delete("other", "copy.bin"), 200)
        cancelled = b.api.create("keys", "cancelled.bin", 10)["id"]
        b.api.chunk(cancelled, b"12345", offset=0)
        expect(a.api.http.delete(f"/v1/files/session:{cancelled}"), 204)
        b.api.chunk(b.api.create("keys", "open.bin", 10)["id"], b"123", offset=0)
        # Two whole sweeps (the second starts after the first has ended): each removes a stray partial file.
        for number in range(2):
            stray = data_dir / "partial" / f"{number:032x}"
            stray.write_bytes(b"left behind")
            wait_for(lambda stray=stray: not stray.exists(), 10, "a sweep to remove a stray partial file")
    finally:
        touched = watcher.stop()

    assert touched, "the workflow should have written some keys"
    assert sorted(key for key in touched if not key.startswith(redis_prefix)) == []
    remaining = list(own_redis.client().scan_iter("*"))
    assert remaining and sorted(key for key in remaining if not key.startswith(redis_prefix)) == []
