"""Helpers shared by the HTTP-level tests (tests/test_api_*.py): uploads, and a look at the data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from blake3 import blake3
from conftest import BASE_URL
from starlette.applications import Starlette

OCTETS = "application/octet-stream"


def b3(content: bytes) -> str:
    """The BLAKE3 hex digest of `content`."""
    return blake3(content).hexdigest()


def session_path(session_id: str) -> str:
    return f"/v1/files/session:{session_id}"


async def start(
    client: httpx.AsyncClient, bucket: str, key: str, size: int, mime_type: str = OCTETS, **extra: Any
) -> httpx.Response:
    """POST /v1/files; returns the response whatever its status."""
    return await client.post(
        "/v1/files", json={"bucket": bucket, "key": key, "mime_type": mime_type, "size": size, **extra}
    )


async def start_session(client: httpx.AsyncClient, bucket: str, key: str, size: int, **extra: Any) -> str:
    """Start a session that must be accepted; returns its id."""
    response = await start(client, bucket, key, size, **extra)
    assert response.status_code == 200, response.text
    return response.json()["id"]


async def send(
    client: httpx.AsyncClient, session_id: str, content: Any, offset: int | None = None, **headers: str
) -> httpx.Response:
    """POST one chunk (bytes or an async iterator of bytes), with Upload-Offset when `offset` is given."""
    if offset is not None:
        headers["Upload-Offset"] = str(offset)
    return await client.post(session_path(session_id), content=content, headers=headers)


async def upload(
    client: httpx.AsyncClient,
    bucket: str,
    key: str,
    content: bytes,
    mime_type: str = OCTETS,
    chunk: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Upload `content` whole (or in chunks of `chunk` bytes) and return the FileResponse."""
    response = await start(client, bucket, key, len(content), mime_type, **extra)
    assert response.status_code == 200, response.text
    if not content:
        return response.json()
    session_id = response.json()["id"]
    step = chunk or len(content)
    for first in range(0, len(content), step):
        response = await send(client, session_id, content[first : first + step], offset=first)
        assert response.status_code == 200, response.text
    return response.json()


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    """A request body with no Content-Length: httpx sends it with chunked transfer encoding."""
    for part in parts:
        yield part


async def download(client: httpx.AsyncClient, bucket: str, key: str, **headers: str) -> httpx.Response:
    return await client.get(f"/v1/files/{bucket}/{key}:content", headers=headers)


def content_url(bucket: str, key: str, base: str = BASE_URL) -> str:
    return f"{base}/v1/files/{bucket}/{key}:content"


def blob_path(data_dir: Path, digest: str) -> Path:
    """Where the contract's layout puts the blob of a BLAKE3 hex digest (a 'blake3:' prefix is dropped)."""
    digest = digest.removeprefix("blake3:")
    return data_dir / "blobs" / digest[:2] / digest[2:4] / digest


def blob_files(data_dir: Path) -> list[Path]:
    """Every file in the blob directory, temporary or not."""
    return sorted(path for path in (data_dir / "blobs").rglob("*") if path.is_file())


def entry_files(data_dir: Path) -> list[Path]:
    """Every entry file on the volume (one per stored bucket/key)."""
    return sorted(path for path in (data_dir / "entries").rglob("*.json") if not path.name.startswith("."))


def partial_path(data_dir: Path, session_id: str) -> Path:
    return data_dir / "partial" / session_id


def partial_files(data_dir: Path) -> list[Path]:
    return sorted(path for path in (data_dir / "partial").iterdir() if path.is_file())


async def sweep(app: Starlette) -> None:
    """Run the background sweep now, as every process does at start and then every interval.

    The first pass reloads the listing index when Redis lost it; the second frees what no entry needs
    (the test settings give blobs no grace period).
    """
    sweeper = app.state.services.sweeper
    for _ in range(2):
        await sweeper.sweep_once()


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response has `status` and the contract's JSON error shape; returns its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body


def asgi_scope(method: str, path: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> dict:
    """An HTTP scope with `path` exactly as given: no client library normalises its dot segments away."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": quote(path, safe="/:").encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"files.test"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("files.test", 80),
    }
