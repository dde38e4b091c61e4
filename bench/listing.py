"""Workload 5: a page of a large bucket, and rebuilding the index after Redis lost its data.

Uploading 100,000 files through the API would take most of the time budget, so the files
are written straight into the data folder in the service's own layout (one blob they all
share, and an entry per key, placed by the service's own EntryStore.path), before the
service starts. That is also the situation the rebuild is for: entries on the volume that
Redis does not know. The rebuild is timed from a FLUSHDB of the benchmark's own Redis to the
first page answered: that request waits for the index to be loaded from the volume.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

from blake3 import blake3
from protocols import BUCKET
from results import Row
from systems import RedisServer, Spec, start
from workloads import Bench

from service.storage.blobs import BlobStore
from service.storage.entries import Entry, EntryStore

LISTING_DB = 1
WARMUP_PAGES = 5


def seed(data_dir: Path, count: int, content: bytes) -> list[str]:
    """Write `count` entries sharing one blob into `data_dir`; their keys, sorted.

    The entry paths are computed here with plain strings, as EntryStore.path does (checked
    against it), because its symlink checks would take most of the seeding time.
    """
    digest = blake3(content).hexdigest()
    blob = BlobStore(data_dir / "blobs").path(digest)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    store = EntryStore(data_dir / "entries")
    keys = [f"dataset/{index // 1000:03d}/part-{index:06d}.bin" for index in range(count)]
    root = str(store.root / BUCKET)
    if Path(_entry_path(root, keys[0])) != store.path(BUCKET, keys[0]):
        raise RuntimeError("service.storage.entries lays entries out differently now: update bench/listing.py")
    template = Entry(
        bucket=BUCKET,
        key="",
        mime_type="application/octet-stream",
        bytes=len(content),
        created_at=int(time.time()),
        digest=digest,
    )
    before, after = template.model_dump_json().split('"key":""')
    made: set[str] = set()
    for key in keys:
        path = _entry_path(root, key)
        folder = os.path.dirname(path)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f'{before}"key":{json.dumps(key)}{after}'.encode())
        finally:
            os.close(fd)
    return sorted(keys)


def _entry_path(root: str, key: str) -> str:
    hashed = hashlib.sha256(key.encode()).hexdigest()
    return f"{root}/{hashed[:2]}/{hashed}.json"


async def listing(bench: Bench, spec: Spec, redis: RedisServer | None, logs: Path) -> list[Row]:
    sizes = bench.sizes
    count, page = sizes.entries, sizes.page
    started = time.perf_counter()
    keys = seed(spec.store, count, bytes(bench.payload.small()))
    bench.log(f"  5: wrote {count} entries in {time.perf_counter() - started:.1f} s")
    title = f"list a page of {page} from a bucket of {count:,} files"
    spread = f"{sizes.pages} requests one after another, each for the page after a random key"
    latency = Row("5", title, "ms", False, note=spread)
    tail = Row("5", title, "ms", False, statistic="p99", note=spread)
    rebuild = Row(
        "5",
        f"rebuild the index of {count:,} files after Redis lost its data",
        "s",
        False,
        note="from a FLUSHDB of the benchmark's own Redis to the answer of the first page, which waits for the rebuild",
    )
    system = start(spec, logs)
    try:
        async with system.connection() as connection:
            target = f"/v1/files/{BUCKET}?limit={page}"
            for _ in range(WARMUP_PAGES):  # the first waits for the index the service builds at start
                (await connection.request("GET", target)).expect(200)
            if redis is None:
                rebuild.note = "skipped: no redis-server on PATH, so Redis could not be flushed"
            for _ in range(sizes.rebuilds if redis is not None else 0):
                redis.flush(LISTING_DB)
                began = time.perf_counter()
                answer = (await connection.request("GET", target)).expect(200)
                rebuild.add(system.name, time.perf_counter() - began)
                if len(answer.json()["data"]) != min(page, count):
                    raise RuntimeError("the rebuilt index does not hold every file")
                bench.log(f"  5: rebuild {rebuild.samples[system.name][-1]:.2f} s")
            choose = random.Random(5)
            for _ in range(sizes.pages):
                after = keys[choose.randrange(max(1, count - page))]
                began = time.perf_counter()
                (await connection.request("GET", f"{target}&after={after}")).expect(200)
                elapsed = (time.perf_counter() - began) * 1000
                latency.add(system.name, elapsed)
                tail.add(system.name, elapsed)
        figure = latency.summary(system.name)
        bench.log(f"  5: page median {figure[0]:.1f} ms, p99 {tail.summary(system.name)[0]:.1f} ms")
    finally:
        bench.log("  5: stopping the listing service")
        system.stop()
    return [latency, tail, rebuild]
