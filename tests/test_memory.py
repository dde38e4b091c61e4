"""Bodies and downloads stream in bounded chunks: memory stays flat whatever the size."""

from __future__ import annotations

import tracemalloc

import pytest
from apihelpers import asgi_scope

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
SIZE = 64 * MiB
# A download holds up to three reads of 2 MiB (one being sent, one waiting, one read ahead: blobs.py) and
# whatever the allocator rounds them up to: 4, 6 or 8 MiB by when the read ahead lands. A copy of the
# file would be 64.
BOUND = 12 * MiB


def pattern(index: int) -> bytes:
    return bytes([index % 251]) * (256 * 1024)


async def body():
    for index in range(SIZE // (256 * 1024)):
        yield pattern(index)


async def test_a_large_upload_and_its_download_hold_a_few_mib_at_most(client, app):
    created = await client.post(
        "/v1/files", json={"bucket": "m", "key": "big", "mime_type": "application/octet-stream", "size": SIZE}
    )
    session = created.json()["id"]
    tracemalloc.start()
    try:
        done = await client.post(f"/v1/files/session:{session}", content=body(), headers={"Content-Length": str(SIZE)})
        held, upload_peak = tracemalloc.get_traced_memory()  # held: the write buffers the process keeps
        tracemalloc.reset_peak()
        received = 0
        chunks = 0

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            nonlocal received, chunks
            if message["type"] == "http.response.body":
                assert message["body"] == b"" or message["body"][:1] == bytes([(received // (256 * 1024)) % 251])
                received += len(message["body"])
                chunks += 1

        await app(asgi_scope("GET", "/v1/files/m/big:content"), receive, send)
        _, download_peak = tracemalloc.get_traced_memory()
        download_peak -= held
    finally:
        tracemalloc.stop()
    assert done.status_code == 200, done.text
    assert done.json()["bytes"] == SIZE
    assert received == SIZE and chunks > 1
    assert upload_peak < BOUND, f"upload peaked at {upload_peak / MiB:.1f} MiB"
    assert download_peak < BOUND, f"download peaked at {download_peak / MiB:.1f} MiB"
