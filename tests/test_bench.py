"""The benchmark command runs end to end (a --quick smoke run) and writes its table; no timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *arguments: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python bench/<script> ARGUMENTS` to its end; the test fails if it runs past `timeout` seconds."""
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *arguments],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_quick_run_writes_a_row_for_every_workload(tmp_path: Path) -> None:
    done = bench(
        "run.py",
        "--quick",
        "--no-peers",
        "--out", str(tmp_path / "docs"),
        "--results", str(tmp_path / "results"),
        "--workdir", str(tmp_path),
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "docs" / "benchmarks.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    for workload in "12345678":
        assert workload in rows, f"no row for workload {workload}:\n{table}"
    assert "| service |" in table and "| service tus |" in table and "| ceiling |" in table
    # The service's tus front offers concatenation: it has a figure in the parallel uploads' row.
    header = next(line for line in table.splitlines() if line.startswith("| # |")).split("|")
    parallel = next(line for line in table.splitlines() if line.startswith("| 7 |")).split("|")
    assert parallel[header.index(" service tus ")].strip() != "–", table
    # 9: the service through the openai SDK's files.create, against the ceilings receiving the same bytes.
    sdk = next(line for line in table.splitlines() if line.startswith("| 9 | files.create of ")).split("|")
    for system in (" service ", " service tuned ", " ceiling tuned "):
        assert sdk[header.index(system)].strip() != "–", table
    assert "| 6 | peak RSS during 9 |" in table
    for scaled in ("service, 2 workers", "service, 2 processes", "service, cluster"):
        assert f"| {scaled} |" in table, scaled
    for peer in ("tuspyserver", "@tus/server"):
        assert f"Skipped: **{peer}**" in table
    assert list((tmp_path / "results").glob("*.json"))


def test_the_object_store_rows_are_written_by_a_quick_run(tmp_path: Path) -> None:
    done = bench("objectstore.py", "--quick", "--out", str(tmp_path), "--workdir", str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "benchmarks-objectstore.md").read_text()
    for row in ("| upload in one request", "| upload in 8 MiB chunks", "| peak RSS of the service"):
        assert row in table, table


def test_the_ab_run_compares_the_service_with_the_ceiling_chunk_by_chunk(tmp_path: Path, shared_redis_url: str) -> None:
    done = bench(
        "ab.py",
        "--redis", shared_redis_url,
        "--rounds", "2",
        "--size-mib", "2",
        "--chunk-kib", "512",
        f"new={ROOT}",
        "ceiling",
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    medians = done.stdout.split("medians:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in medians] == ["new", "ceiling"], done.stdout
    assert all("CPU per chunk" in line and "VmHWM" in line for line in medians), done.stdout
