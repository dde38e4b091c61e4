"""Issue #12: a real `files-service serve` stays under 100 MiB resident through a 1 GiB tus upload sent
as tus-js-client's `parallelUploads: 4` sends it (four partial uploads at once, then the final one that
concatenates them), after a 1 GiB tus upload in one request went through the same process: the
buffers of one upload are not kept, or multiplied by the uploads at once."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
from blake3 import blake3

from .harness import HTTP_TIMEOUT, MiB, ServiceProcess, expect, peak_rss

SIZE_MIB = 1024
PARTS = 4
LIMIT = 100 * MiB
# What the uploads may add to the process's own peak at its start: the write buffers it shares (8 MiB),
# and one each for the parts written at once. Each part kept five of its own, fresh ones each time: 31 MiB.
GROWTH = 24 * MiB
TUS = {"Tus-Resumable": "1.0.0"}
FILLER = os.urandom(MiB - 8)


def blocks(first: int, count: int) -> Iterator[bytes]:
    """`count` MiB of the content from MiB `first` on, each MiB its own (its number in front)."""
    for index in range(first, first + count):
        yield index.to_bytes(8, "big") + FILLER


def create(client: httpx.Client, headers: dict[str, str]) -> str:
    return expect(client.post("/tus/", headers={**TUS, **headers}), 201).headers["location"]


def send(client: httpx.Client, location: str, first: int, count: int) -> None:
    headers = {
        **TUS,
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(count * MiB),
    }
    expect(client.patch(location, content=blocks(first, count), headers=headers), 204)


def named(bucket: str, key: str) -> dict[str, str]:
    pairs = {"bucket": bucket, "key": key}
    return {"Upload-Metadata": ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())}


def upload_in_parts(process: ServiceProcess, key: str) -> None:
    per_part = SIZE_MIB // PARTS

    def part(index: int) -> str:
        with httpx.Client(base_url=process.base_url, timeout=HTTP_TIMEOUT) as client:
            location = create(client, {"Upload-Length": str(per_part * MiB), "Upload-Concat": "partial"})
            send(client, location, index * per_part, per_part)
            return location

    with ThreadPoolExecutor(PARTS) as pool:
        locations = list(pool.map(part, range(PARTS)))
    with httpx.Client(base_url=process.base_url, timeout=HTTP_TIMEOUT) as client:
        create(client, {"Upload-Concat": "final;" + " ".join(locations), **named("m", key)})


def test_a_1_gib_tus_upload_in_parallel_parts_keeps_the_service_under_100_mib(services):
    process = services.start()
    started = peak_rss(process.pid)
    with httpx.Client(base_url=process.base_url, timeout=HTTP_TIMEOUT) as client:
        whole = create(client, {"Upload-Length": str(SIZE_MIB * MiB), **named("m", "whole")})
        send(client, whole, 0, SIZE_MIB)
    upload_in_parts(process, "parts")
    peak = peak_rss(process.pid)
    expected = blake3()
    for block in blocks(0, SIZE_MIB):
        expected.update(block)
    for key in ("whole", "parts"):
        info = expect(process.api.info("m", key), 200).json()
        assert (info["bytes"], info["digest"]) == (SIZE_MIB * MiB, f"blake3:{expected.hexdigest()}")
    assert peak < LIMIT, f"the service peaked at {peak / MiB:.1f} MiB resident"
    assert peak - started < GROWTH, f"the uploads took the service from {started / MiB:.1f} to {peak / MiB:.1f} MiB"
