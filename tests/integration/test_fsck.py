"""`files-service fsck` beside running services: it never removes what a running service may own."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import redis

from .harness import MiB, assert_content, free_port, service_command, wait_for

COMMAND_SECONDS = 60.0
LONG_AGO = time.time() - 86400


def run_command(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess:
    """`files-service ARGUMENTS` to its end; the test fails if it runs past COMMAND_SECONDS."""
    return subprocess.run(
        service_command(*arguments), env=env, capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False
    )


def finding(output: str, state: str, kind: str, path: Path) -> bool:
    return re.search(rf"^{state}\s+{kind}\s+{re.escape(str(path))}\s", output, re.MULTILINE) is not None


def plant_partial(data_dir: Path, name: str, content: bytes, mtime: float | None = None) -> Path:
    path = data_dir / "partial" / name
    path.write_bytes(content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_fsck_repair_leaves_the_upload_of_a_running_embedded_service_alone(services, data_dir) -> None:
    """The case of issue 9: no FILES_REDIS_URL, a live session at 1,000,000 bytes, `fsck --repair`."""
    service = services.start(redis_url=None)
    content = os.urandom(3_000_000)
    session = service.api.create("models", "run-1/model.bin", len(content))
    assert service.api.chunk(session["id"], content[:1_000_000], offset=0)["offset"] == 1_000_000

    checked = run_command(services.environment(redis_url=None), "fsck", "--repair")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    partial = data_dir / "partial" / session["id"]
    assert finding(checked.stdout, "skipped", "unchecked partial", partial), checked.stdout
    assert "stray partial" not in checked.stdout
    assert "1 partial file(s) not checked" in checked.stdout and "FILES_REDIS_URL" in checked.stdout
    assert partial.stat().st_size == 1_000_000
    finished = service.api.chunk(session["id"], content[1_000_000:], offset=1_000_000)
    assert finished["bytes"] == len(content)
    assert_content(service.api.content("models", "run-1/model.bin"), content)


def test_fsck_repair_beside_a_running_embedded_service_reports_a_lost_blob_and_leaves_its_file(
    services, data_dir
) -> None:
    """Removing the entry would leave the file listed by that service (its index lives in its process):
    fsck says what it found and that it did not repair it; once the service is stopped, it repairs."""
    service = services.start(redis_url=None)
    stored = service.api.upload("models", "lost.bin", b"content whose blob goes")
    blob = next(
        path for path in (data_dir / "blobs").rglob("*") if path.name == stored["digest"].removeprefix("blake3:")
    )
    blob.unlink()

    checked = run_command(services.environment(redis_url=None), "fsck", "--repair")

    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "found    missing blob" in checked.stdout and "not repaired: a running service" in checked.stdout
    assert service.api.info("models", "lost.bin").status_code == 200
    assert "lost.bin" in service.api.keys("models")
    service.stop()
    repaired = run_command(services.environment(redis_url=None), "fsck", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired missing blob" in repaired.stdout


def test_fsck_repair_with_no_service_running_removes_a_stray_partial(services, data_dir) -> None:
    service = services.start(redis_url=None)
    session = service.api.create("models", "abandoned.bin", 2 * MiB)
    service.api.chunk(session["id"], os.urandom(MiB), offset=0)
    service.stop()  # its sessions die with it: the partial file is no one's now
    partial = data_dir / "partial" / session["id"]

    checked = run_command(services.environment(redis_url=None), "fsck", "--repair")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert finding(checked.stdout, "repaired", "stray partial", partial), checked.stdout
    assert not partial.exists()


def test_a_second_service_refuses_a_data_directory_an_embedded_service_holds(services, data_dir) -> None:
    services.start(redis_url=None)
    for redis_url, reason in [(None, "must be alone on it"), (services.environment()["FILES_REDIS_URL"], "holds")]:
        second = run_command(services.environment(redis_url=redis_url), "serve", "--port", str(free_port()))
        assert second.returncode == 2, second.stdout + second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("files-service: ") and reason in last and str(data_dir.resolve()) in last, last
        assert "Traceback" not in second.stderr


def test_fsck_on_a_shared_redis_removes_only_old_partials_no_session_owns(services, data_dir) -> None:
    service = services.start()
    wait_for(lambda: sweeps(service.api.http.get("/metrics").text) > 0, 10, "the service's first sweep")
    # The test holds the sweep's lease from here on, so that no sweep of the service removes a plant before
    # fsck judges it (a sweep removes every partial file no session owns, whatever its age).
    shared = redis.Redis.from_url(services.environment()["FILES_REDIS_URL"])
    sweep_lock = f"{services.prefix}lock:sweep"
    wait_for(lambda: shared.set(sweep_lock, "test", nx=True, px=600_000), 30, "the sweep's lease, free between sweeps")
    content = os.urandom(2 * MiB)
    session = service.api.create("models", "live.bin", len(content))
    service.api.chunk(session["id"], content[:MiB], offset=0)
    live = data_dir / "partial" / session["id"]
    old = plant_partial(data_dir, "0" * 32, b"left behind long ago", LONG_AGO)
    fresh = plant_partial(data_dir, "1" * 32, b"written just now")

    checked = run_command(services.environment(), "fsck", "--repair")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert finding(checked.stdout, "repaired", "stray partial", old), checked.stdout
    assert "not checked" not in checked.stdout
    assert not old.exists()
    assert fresh.exists() and live.stat().st_size == MiB
    service.api.chunk(session["id"], content[MiB:], offset=MiB)
    assert_content(service.api.content("models", "live.bin"), content)


def sweeps(metrics: str) -> float:
    found = re.search(r"^files_sweeper_runs_total (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
