"""A first pass through the API: create, upload in two chunks, list, download, delete."""

import os

import pytest
from blake3 import blake3

pytestmark = [pytest.mark.anyio, pytest.mark.in_memory]


async def test_upload_in_two_chunks_then_download(client):
    content = os.urandom(300_000)
    created = await client.post(
        "/v1/files",
        json={"bucket": "b", "key": "a/b.bin", "mime_type": "application/octet-stream", "size": len(content)},
    )
    assert created.status_code == 200, created.text
    session = created.json()
    assert session["offset"] == 0 and session["size"] == len(content)
    assert session["url"] == f"http://files.test/v1/files/session:{session['id']}"
    first = await client.post(f"/v1/files/session:{session['id']}", content=content[:100_000])
    assert first.status_code == 200 and first.json()["offset"] == 100_000
    done = await client.post(
        f"/v1/files/session:{session['id']}", content=content[100_000:], headers={"Upload-Offset": "100000"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["digest"] == "blake3:" + blake3(content).hexdigest()
    download = await client.get("/v1/files/b/a/b.bin:content")
    assert download.status_code == 200 and download.content == content
    assert (await client.get("/v1/files/b")).json()["data"][0]["key"] == "a/b.bin"
    assert (await client.delete("/v1/files/b/a/b.bin")).status_code == 200
    assert (await client.get("/v1/files/b/a/b.bin")).status_code == 404
