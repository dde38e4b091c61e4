"""Benchmark the files service against a bare Starlette app (the ceiling) and two tus servers.

    python bench/run.py [--quick] [--only WORKLOAD ...] [--out docs/] [--no-peers]

One run on one machine: it installs the peers into bench/.peers/ when they are missing,
starts every system as one process on a free port, runs the workloads of the issue, and
writes benchmarks.md (the table) and benchmarks.png (the chart) into --out, and the raw
samples into bench/results/. Workloads: 1 upload (one request), 2 chunks, 3 small files,
4 download, 5 listing and index rebuild, 6 peak memory (measured during 1, 2, 7 and 9), 7 parallel
tus parts (concatenation), 9 one large file through the openai SDK's `files.create` (the ceilings
receive the same bytes in one request). The service runs twice: spoken to in its own API, and as "service
tus" through its tus front with the very requests the tus peers get (rows 1, 2, 3 and 7),
and in workload 3 also as "service granian", its app under granian instead of uvicorn (when
granian is installed: pip install -e '.[bench]'). 8 scale-out: small files through one
worker, two, two processes, and one worker on a Redis Cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.append(str(BENCH.parent))  # the service's packages, when they are not installed

import lineup
import machine
import peers
import report
from listing import listing
from payload import Payload
from protocols import FilesAPI, OpenAIFiles, ServiceTus
from results import Row
from systems import Fleet, RedisCluster, RedisServer, Spec, System, start_fleet
from workloads import Bench, Sizes, downloads, large_upload, parallel_upload, scale_out, small_files

KiB, MiB, GiB = 1024, 1024**2, 1024**3
FULL = Sizes(
    large=GiB, chunk=8 * MiB, parallel=4, reps=5,
    small=4 * KiB, small_clients=32, small_runs=4, small_seconds=5.0,
    ranges=16, downloads=4, entries=100_000, page=1000, pages=200, rebuilds=3,
)  # fmt: skip
QUICK = Sizes(
    large=16 * MiB, chunk=2 * MiB, parallel=4, reps=2,
    small=4 * KiB, small_clients=32, small_runs=3, small_seconds=1.0,
    ranges=16, downloads=1, entries=2_000, page=1000, pages=20, rebuilds=2,
)  # fmt: skip
WORKLOADS = {
    "upload": "1", "chunks": "2", "small": "3", "download": "4", "listing": "5", "rss": "6", "parallel": "7",
    "scale": "8", "openai": "9",
}  # fmt: skip
RESULTS = BENCH / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (CI), not a measurement")
    parser.add_argument(
        "--only", nargs="+", metavar="WORKLOAD", choices=[*WORKLOADS, *WORKLOADS.values()],
        help=f"run only these workloads, by number or name ({', '.join(WORKLOADS)})",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=BENCH.parent / "docs", help="where benchmarks.md/.png go")
    parser.add_argument("--no-peers", action="store_true", help="only the service and the ceiling; install nothing")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the raw samples go (JSON)")
    parser.add_argument(
        "--peer-flush", choices=["fsync", "sync"], default="fsync",
        help="how a peer's upload is flushed: fsync of its files and folder (default), or os.sync()",
    )  # fmt: skip
    parser.add_argument("--no-tuned-service", action="store_true", help="skip the service run with GLIBC_TUNABLES")
    parser.add_argument("--workdir", type=Path, help="where the systems store (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the servers' logs")
    return parser.parse_args(argv)


def selected(only: list[str] | None) -> set[str]:
    if not only:
        return set(WORKLOADS.values())
    numbers = {WORKLOADS.get(name, name) for name in only}
    if "6" in numbers:  # peak memory is measured during workloads 1 and 2
        numbers |= {"1", "2"}
    return numbers


class Logger:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


def lineups(
    arguments: argparse.Namespace,
    workdir: Path,
    redis: RedisServer | None,
    cluster: RedisCluster | None,
    skipped: dict[str, str],
    log: Logger,
) -> dict[str, list[Spec]]:
    """The systems of workloads 1 to 4 and 7, by number; a peer that cannot be had is left out, with the reason."""
    url = redis.url(0) if redis else None
    service = lineup.service(workdir, url)
    service_tus = lineup.service_tus(workdir, url)
    ceilings = [lineup.ceiling(workdir), lineup.ceiling(workdir, tuned=True)]
    tuned_service = [] if arguments.no_tuned_service else [lineup.service(workdir, url, tuned=True)]
    python_peers: list[Spec] = []
    node_peers: list[Spec] = []
    if arguments.no_peers:
        skipped["tuspyserver"] = skipped["@tus/server"] = "left out by --no-peers"
    else:
        try:
            log("tuspyserver: checking bench/.peers/venv, installing it when missing")
            python = peers.ensure_tuspyserver()
            python_peers = [lineup.tuspyserver(workdir, python), lineup.tuspyserver(workdir, python, tuned=True)]
        except peers.Unavailable as error:
            skipped["tuspyserver"] = str(error)
        try:
            log("@tus/server: checking bench/.peers/node, installing it when missing")
            node_peers = [lineup.tus_node(workdir, peers.ensure_tus_node())]
        except peers.Unavailable as error:
            skipped["@tus/server"] = str(error)
    uploads = [service, *tuned_service, service_tus, *ceilings, *python_peers, *node_peers]
    plain = [spec for spec in uploads if not spec.name.endswith(" tuned")]
    if importlib.util.find_spec("granian") is not None:  # the other HTTP server, where the small-file rate is decided
        plain.insert(1, lineup.service_granian(workdir, url))
    else:
        skipped["service granian"] = "granian is not installed beside the service (pip install -e '.[bench]')"
    tus = [service_tus, *python_peers[:1], *node_peers]
    sdk = [service, *tuned_service, *ceilings]
    if importlib.util.find_spec("openai") is None:
        skipped["openai SDK"] = "workload 9 needs the openai package beside the service (pip install -e '.[bench]')"
        sdk = []
    scaled = [service]
    if redis is None:
        skipped["service, 2 workers"] = skipped["service, 2 processes"] = "no redis-server on PATH"
    else:
        scaled += [
            lineup.service(workdir, url, name="service, 2 workers", workers=2),
            lineup.service(workdir, url, name="service, 2 processes", processes=2),
        ]
    if cluster is None:
        skipped["service, cluster"] = "no redis-server or redis-cli on PATH"
    else:
        scaled.append(lineup.service(workdir, cluster.url, name="service, cluster"))
    return {
        "1": uploads,
        "2": uploads,
        "3": plain,
        "4": [service, *tuned_service, *ceilings],
        "7": tus,
        "8": scaled,
        "9": sdk,
    }


def start_all(specs: list[Spec], logs: Path, skipped: dict[str, str], log: Logger) -> dict[str, System | Fleet]:
    """Start each system once; a peer that does not start is skipped, the service not starting is an error."""
    running: dict[str, System | Fleet] = {}
    try:
        for spec in specs:
            if spec.name in running:
                continue
            try:
                running[spec.name] = start_fleet(spec, logs)
            except RuntimeError as error:
                if isinstance(spec.protocol, (FilesAPI, ServiceTus)):
                    raise
                skipped[spec.name] = str(error)
    except BaseException:
        stop_all(running)
        raise
    log(f"running: {', '.join(running)}; skipped: {', '.join(skipped) or 'none'}")
    return running


def stop_all(running: dict[str, System | Fleet]) -> None:
    for system in running.values():
        system.stop()


def _split_services(systems: list[System]) -> tuple[list[System], list[System]]:
    services = [system for system in systems if isinstance(system.spec.protocol, FilesAPI)]
    return services, [system for system in systems if system not in services]


async def measure(
    numbers: set[str], bench: Bench, systems: dict[str, list[Any]], listing_spec: Spec,
    redis: RedisServer | None, logs: Path,
) -> list[Row]:  # fmt: skip
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=64))
    rows: list[Row] = []
    for number, title, work in (
        ("1", "one large file in one request", lambda: large_upload(bench, systems["1"], chunked=False)),
        ("2", "one large file in chunks", lambda: large_upload(bench, systems["2"], chunked=True)),
        ("3", "small files", lambda: small_files(bench, systems["3"])),
        ("7", "parallel tus parts", lambda: parallel_upload(bench, systems["7"])),
        ("9", "openai files.create", lambda: large_upload(bench, systems["9"], False, OpenAIFiles())),
        ("4", "downloads", lambda: downloads(bench, *_split_services(systems["4"]))),
        ("5", "listing and index rebuild", lambda: listing(bench, listing_spec, redis, logs)),
        ("8", "scale-out", lambda: scale_out(bench, systems["8"])),
    ):
        if number in numbers:
            bench.log(f"workload {number}: {title}")
            rows.extend(await work())
    return rows


def main(argv: list[str] | None = None) -> int:
    arguments = parse(argv)
    numbers = selected(arguments.only)
    sizes = QUICK if arguments.quick else FULL
    log = Logger()
    workdir = Path(tempfile.mkdtemp(prefix="files-bench-", dir=arguments.workdir))
    logs = workdir / "logs"
    logs.mkdir()
    skipped: dict[str, str] = {}
    bench = Bench(sizes, Payload(sizes.large if numbers & {"1", "2", "4", "7", "9"} else 0, sizes.small), log)
    bench.sync_all = arguments.peer_flush == "sync"
    bench.notes.append(
        "Workload 3 runs the plain variants only: the allocator's thresholds concern large buffers, "
        "and a run of it leaves tens of thousands of files to delete."
    )
    bench.notes.append(f'"tuned": the same process with `GLIBC_TUNABLES={lineup.GLIBC_TUNED}`.')
    if arguments.quick:  # a smoke run need not slow down everything else on the machine
        bench.drop_cache = False
        bench.notes.append("--quick: the page cache was not dropped.")
    redis: RedisServer | None = None
    cluster: RedisCluster | None = None
    running: dict[str, System | Fleet] = {}
    try:
        if RedisServer.available():
            redis = RedisServer(workdir)
            bench.notes.append("The service ran on a redis-server of the benchmark's own, without persistence.")
        else:
            bench.notes.append("No redis-server on PATH: the service ran on its embedded Redis stand-in.")
        if "8" in numbers and RedisCluster.available():
            log("starting a Redis Cluster of three primaries")
            cluster = RedisCluster(workdir)
            bench.notes.append(
                "Workload 8: the same 4 KiB files through one worker, `--workers 2`, two separate processes on one "
                "Redis (each client talks to one of them), and one worker on a Redis Cluster of three primaries "
                "(redis-servers of the benchmark's own on this machine, no replicas). Every process, the Redis "
                "servers and the benchmark's client share this machine's cores: a second worker adds CPU only "
                "where a core is idle."
            )
        specs = lineups(arguments, workdir, redis, cluster, skipped, log)
        listing_spec = lineup.service(workdir / "listing", redis.url(1) if redis else None)
        running = start_all(
            [spec for number in sorted(specs) if number in numbers for spec in specs[number]], logs, skipped, log
        )
        systems = {
            number: [running[spec.name] for spec in group if spec.name in running] for number, group in specs.items()
        }
        rows = asyncio.run(measure(numbers, bench, systems, listing_spec, redis, logs))
    finally:
        log("stopping the servers")
        stop_all(running)
        if redis is not None:
            redis.stop()
        if cluster is not None:
            cluster.stop()
        if arguments.keep:
            log(f"kept {workdir}")
        else:
            log(f"removing {workdir}")
            shutil.rmtree(workdir, ignore_errors=True)
    ran = {spec.name: spec for group in specs.values() for spec in group if spec.name in running}
    if "5" in numbers:
        ran.setdefault(listing_spec.name, listing_spec)
    outcome = {
        "mode": "quick" if arguments.quick else "full",
        "seconds": round(time.monotonic() - log.started, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": {**machine.describe(), "disk": machine.filesystem(workdir.parent)},
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "systems": [{"name": name, "flushes": spec.flushes, "notes": spec.notes} for name, spec in ran.items()],
        "peer_flush": arguments.peer_flush,
        "skipped": skipped,
        "notes": bench.notes,
        "rows": [row.to_json() for row in rows],
    }
    drawn = write(outcome, arguments.out, arguments.results, not arguments.no_peers, log)
    log(f"done in {outcome['seconds']:.0f} s")
    return 0 if drawn else 1


def write(outcome: dict, out: Path, results: Path, install: bool, log: Logger) -> bool:
    """The raw samples into `results`, the table and the chart into `out`; False when the chart failed."""
    out.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    raw = results / f"{time.strftime('%Y%m%d-%H%M%S')}-{outcome['mode']}.json"
    raw.write_text(json.dumps(outcome, indent=1))
    chart: Path | None = out / "benchmarks.png"
    drawn = True
    log("drawing the chart")
    try:
        python = peers.chart_python(install)
    except peers.Unavailable as error:
        outcome["notes"].append(f"No chart was drawn: matplotlib is unavailable ({error}).")
        chart = None
    else:
        done = subprocess.run(
            [python, BENCH / "chart.py", raw, chart], check=False, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log(f"bench/chart.py failed:\n{done.stderr}")
            outcome["notes"].append("No chart was drawn: bench/chart.py failed (its error is in the run's output).")
            chart, drawn = None, False
    raw.write_text(json.dumps(outcome, indent=1))
    (out / "benchmarks.md").write_text(report.markdown(outcome, chart.name if chart else None))
    log(f"wrote {out / 'benchmarks.md'}" + (f", {chart}" if chart else "") + f" and {raw}")
    return drawn


if __name__ == "__main__":
    sys.exit(main())
