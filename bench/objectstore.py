"""The object store's rows: an upload through the service into an S3 API server, against the same bytes
put there straight with boto3 (the ceiling for this backend: the service can only add to it).

`python bench/objectstore.py [--quick] [--size MiB] [--runs N]` starts a moto S3 server (`moto_server`,
in a process of its own: the store), a redis-server and `files-service serve` with FILES_STORAGE_URL,
then times, per run:
- the service: 1 GiB in one request, and in 8 MiB chunks (each a POST with Upload-Offset), each
  completed (hashed, placed at its digest, the entry written) before the clock stops;
- the ceiling: boto3's managed upload of the same bytes (8 MiB parts, 4 in flight) into the same server;
and the service's peak RSS (VmHWM) over all its uploads. It writes docs/benchmarks-objectstore.md.
moto keeps objects in its memory and temporary files and is far slower than a real store: the figures say how
close the service comes to what boto3 gets from the same server, not what S3 or MinIO would give.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
from boto3.s3.transfer import TransferConfig
from machine import describe
from payload import Payload
from systems import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
CHUNK = 8 * MiB
SEND = MiB  # the request body is sent in pieces of this size
BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def wait_until(check, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if check():
                return
        except (httpx.TransportError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds} s")
        time.sleep(0.1)


class Stack:
    """moto, Redis and one service process, all stopped by `stop`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.moto_port = free_port()
        self.store_url = f"http://127.0.0.1:{self.moto_port}"
        # The moto installed beside this Python (the project's), before any other on the PATH.
        beside = Path(sys.executable).with_name("moto_server")
        moto = str(beside) if beside.exists() else shutil.which("moto_server") or "moto_server"
        self.moto = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: httpx.get(self.store_url, timeout=2).status_code > 0, 30, "moto to answer")
        self.s3 = boto3.client("s3", endpoint_url=self.store_url, **_boto_credentials())
        self.s3.create_bucket(Bucket=BUCKET)
        self.redis = RedisServer(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {name: value for name, value in os.environ.items() if not name.startswith("FILES_")}
        env.update(
            CREDENTIALS,
            FILES_STORAGE_URL=f"s3://{BUCKET}/files",
            FILES_S3_ENDPOINT_URL=self.store_url,
            FILES_REDIS_URL=self.redis.url(0),
            FILES_DATA_DIR=str(workdir / "data"),
            FILES_LOG_LEVEL="warning",
            FILES_BLOB_GRACE_SECONDS="0",
            PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        )
        (workdir / "metrics").mkdir(exist_ok=True)
        self.log = (workdir / "service.log").open("w")
        self.service = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, 60, "the service to answer")

    def peak_rss(self) -> float:
        """The service's peak resident memory so far (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.service.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def empty_bucket(self) -> None:
        """Forget what the last run stored (moto holds it in memory)."""
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                self.s3.delete_object(Bucket=BUCKET, Key=item["Key"])

    def stop(self) -> None:
        for process in (self.service, self.moto):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        self.redis.stop()
        self.log.close()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def pieces(data: memoryview, start: int, end: int) -> Iterator[memoryview]:
    for first in range(start, end, SEND):
        yield data[first : min(first + SEND, end)]


def upload(stack: Stack, client: httpx.Client, data: memoryview, key: str, chunk: int | None) -> float:
    """Seconds for a whole upload through the service, from creating the session to the file."""
    started = time.monotonic()
    created = client.post(
        f"{stack.url}/v1/files",
        json={"bucket": "bench", "key": key, "mime_type": "application/octet-stream", "size": len(data)},
    )
    created.raise_for_status()
    session = created.json()["url"]
    step = chunk or len(data)
    for first in range(0, len(data), step):
        end = min(first + step, len(data))
        answer = client.post(
            session,
            content=pieces(data, first, end),
            headers={"Upload-Offset": str(first), "Content-Length": str(end - first)},
        )
        answer.raise_for_status()
    assert answer.json()["bytes"] == len(data), answer.text
    return time.monotonic() - started


def ceiling(stack: Stack, source: Path) -> float:
    """Seconds for boto3's own multipart upload of the same bytes into the same server."""
    config = TransferConfig(multipart_threshold=CHUNK, multipart_chunksize=CHUNK, max_concurrency=4)
    started = time.monotonic()
    stack.s3.upload_file(str(source), BUCKET, "ceiling/upload", Config=config)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="MiB per upload (default %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default %(default)s)")
    parser.add_argument("--quick", action="store_true", help="32 MiB, one run: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where benchmarks-objectstore.md goes")
    parser.add_argument("--workdir", type=Path, default=None)
    arguments = parser.parse_args(argv)
    size, runs = (32 * MiB, 1) if arguments.quick else (arguments.size * MiB, arguments.runs)
    workdir = Path(tempfile.mkdtemp(prefix="files-bench-s3-", dir=arguments.workdir))
    payload = Payload(size, 0)
    source = workdir / "payload.bin"
    source.write_bytes(payload.large())
    started = time.monotonic()
    stack = Stack(workdir)
    figures: dict[str, list[float]] = {"whole": [], "chunks": [], "ceiling": []}
    try:
        with httpx.Client(timeout=600) as client:
            for run in range(runs):
                for name in figures:
                    if name == "ceiling":
                        seconds = ceiling(stack, source)
                    else:
                        chunk = CHUNK if name == "chunks" else None
                        seconds = upload(stack, client, payload.large(), f"{name}-{run}", chunk)
                    figures[name].append(size / MiB / seconds)
                    rss = stack.peak_rss()
                    print(f"run {run + 1}: {name} {figures[name][-1]:.1f} MiB/s, peak RSS {rss:.1f} MiB", flush=True)
                    stack.empty_bucket()
        peak = stack.peak_rss()
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    write(arguments.out / "benchmarks-objectstore.md", size, runs, figures, peak, time.monotonic() - started)
    return 0


def write(path: Path, size: int, runs: int, figures: dict[str, list[float]], peak: float, took: float) -> None:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"

    ceiling_median = statistics.median(figures["ceiling"])
    machine = describe()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        "# Benchmarks: the object store",
        "",
        f"Written by `python bench/objectstore.py` on {time.strftime('%Y-%m-%d %H:%M:%S %z')}, in {took:.0f} s; "
        f"{size // MiB} MiB per upload, {runs} run(s) of each.",
        "",
        f"Machine: {machine['cores']} cores ({machine['processor']}), {machine['memory']} of memory, "
        f"Python {machine['python']}. Load average when it finished: {load} (other programs ran on "
        "it meanwhile: the figures are noisy).",
        "",
        "The store is moto's S3 server (`moto_server`, one process of its own, objects over 5 MiB in temporary",
        "files), far slower than S3 or MinIO: the rows compare the service with boto3's own upload into the",
        "same server, the most this backend can give, not with a real store.",
        "",
        "The service does one thing more than the ceiling: once the content is verified, a server-side copy",
        "(CopyObject) of the whole upload to `blobs/<digest>`, which moto makes by reading, writing and",
        "hashing every byte again, in about as long as the ceiling's whole upload takes (see the object",
        "store in docs/design.md). That copy alone keeps the ratio near 0.5 on moto.",
        "",
        "| workload | unit | service on the object store | boto3 straight into it (ceiling) | service / ceiling |",
        "|---|---|---|---|---|",
    ]
    for name, title in (("whole", "upload in one request"), ("chunks", "upload in 8 MiB chunks")):
        ratio = statistics.median(figures[name]) / ceiling_median
        service, store = cell(figures[name]), cell(figures["ceiling"])
        lines.append(f"| {title} ({size // MiB} MiB) | MiB/s ↑ | {service} | {store} | {ratio:.2f} |")
    lines += [f"| peak RSS of the service during them | MiB ↓ | {peak:.1f} | – | – |", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
