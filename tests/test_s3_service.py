"""The service on the object store, through its HTTP API (in process, fakeredis; moto behind a TCP proxy).

What a client sees when the store goes out of reach (503, then it resumes with nothing lost),
and downloads (Range, ETag, presigned redirects) served from the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from apihelpers import b3, send, start_session
from s3server import CREDENTIALS, S3Server
from tcpproxy import TcpProxy

from service.config import Settings

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[TcpProxy]:
    proxy = TcpProxy(s3_server.port)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def settings(settings: Settings, s3_server: S3Server, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return settings.model_copy(
        update={"storage_url": f"s3://{s3_server.new_bucket()}/files", "s3_endpoint_url": proxy.url}
    )


def content(size: int, seed: int = 7) -> bytes:
    return bytes((seed * 31 + index * 7) % 251 for index in range(size))


async def test_a_store_out_of_reach_is_503_and_the_upload_resumes_with_nothing_lost(
    client: httpx.AsyncClient, proxy: TcpProxy
):
    data = content(7 * MiB)
    session_id = await start_session(client, "b", "cut.bin", len(data))
    first = await send(client, session_id, data[: 6 * MiB], offset=0)  # a whole part and a tail
    assert first.status_code == 200, first.text
    proxy.cut()
    refused = await send(client, session_id, data[6 * MiB :], offset=6 * MiB)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "unavailable"
    proxy.mend()
    offset = (await client.get(f"/v1/files/session:{session_id}")).json()["offset"]
    assert offset == 6 * MiB
    done = await send(client, session_id, data[offset:], offset=offset)
    assert done.status_code == 200, done.text
    download = await client.get("/v1/files/b/cut.bin:content")
    assert download.status_code == 200
    assert download.content == data


async def test_a_store_cut_off_mid_body_keeps_what_was_acknowledged(client: httpx.AsyncClient, proxy: TcpProxy):
    data = content(12 * MiB, seed=3)
    session_id = await start_session(client, "b", "midway.bin", len(data))

    async def cut_after_half() -> AsyncIterator[bytes]:
        for start in range(0, len(data), MiB):
            if start == 6 * MiB:
                proxy.cut()
            yield data[start : start + MiB]

    refused = await send(client, session_id, cut_after_half(), offset=0)
    assert refused.status_code == 503, refused.text
    proxy.mend()
    offset = (await client.get(f"/v1/files/session:{session_id}")).json()["offset"]
    assert 0 <= offset <= 6 * MiB
    done = await send(client, session_id, data[offset:], offset=offset)
    assert done.status_code == 200, done.text
    assert done.json()["digest"] == f"blake3:{b3(data)}"
    assert (await client.get("/v1/files/b/midway.bin:content")).content == data


async def test_reads_of_a_store_out_of_reach_are_503(client: httpx.AsyncClient, proxy: TcpProxy):
    data = content(1000)
    session_id = await start_session(client, "b", "small.bin", len(data))
    assert (await send(client, session_id, data, offset=0)).status_code == 200
    proxy.cut()
    try:
        response = await client.get("/v1/files/b/small.bin:content")
    finally:
        proxy.mend()
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
