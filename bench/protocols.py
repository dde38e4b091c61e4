"""How each system is asked to store an upload and serve it back: the service's API, tus, the ceiling's.

Each upload is what a client of that system does for one file: the service and tus create a
session (tus: an upload) and then send the body, whole or in chunks at explicit offsets; the
ceiling has no session and takes the body at once. Each returns the name the stored upload
goes by, which the benchmark uses to flush it (for systems that do not) and to delete it.
"""

from __future__ import annotations

import base64
import json
from typing import Protocol
from urllib.parse import urlsplit

from clients import Connection, parts

BUCKET = "bench"


class UploadProtocol(Protocol):
    async def upload(self, connection: Connection, name: str, data: memoryview, chunk: int | None) -> str:
        """Store `data` as `name`, in requests of `chunk` bytes (None: one request); the stored id."""
        ...

    async def remove(self, connection: Connection, stored: str) -> None:
        """Delete the stored upload, to keep the disk from filling between runs."""
        ...

    def download_target(self, stored: str) -> str:
        """The request target that serves the stored upload's content."""
        ...


class FilesAPI:
    """The service's contract: POST /v1/files, then POST /v1/files/session:<id> per chunk."""

    async def upload(self, connection: Connection, name: str, data: memoryview, chunk: int | None) -> str:
        created = await connection.request(
            "POST",
            "/v1/files",
            {"Content-Type": "application/json"},
            json.dumps(
                {"bucket": BUCKET, "key": name, "mime_type": "application/octet-stream", "size": len(data)}
            ).encode(),
        )
        session = created.expect(200).json()["id"]
        for offset, part in parts(data, chunk):
            headers = {"Upload-Offset": str(offset), "Content-Type": "application/octet-stream"}
            (await connection.request("POST", f"/v1/files/session:{session}", headers, part)).expect(200)
        return name

    async def remove(self, connection: Connection, stored: str) -> None:
        (await connection.request("DELETE", f"/v1/files/{BUCKET}/{stored}")).expect(200, 404)

    async def digest(self, connection: Connection, stored: str) -> str:
        """The BLAKE3 hex digest of a stored file, which names its blob."""
        info = (await connection.request("GET", f"/v1/files/{BUCKET}/{stored}")).expect(200).json()
        return info["digest"].removeprefix("blake3:")

    def download_target(self, stored: str) -> str:
        return f"/v1/files/{BUCKET}/{stored}:content"


class Tus:
    """tus 1.0: POST /files (creation) for a Location, then one PATCH per chunk."""

    async def upload(self, connection: Connection, name: str, data: memoryview, chunk: int | None) -> str:
        metadata = ",".join(
            f"{key} {base64.b64encode(value.encode()).decode()}"
            for key, value in (("filename", name), ("filetype", "application/octet-stream"))
        )
        created = await connection.request(
            "POST",
            "/files",
            {"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)), "Upload-Metadata": metadata},
        )
        location = urlsplit(created.expect(201).headers["location"]).path
        for offset, part in parts(data, chunk):
            headers = {
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            }
            (await connection.request("PATCH", location, headers, part)).expect(204)
        return location.rsplit("/", 1)[-1]

    async def remove(self, connection: Connection, stored: str) -> None:
        (await connection.request("DELETE", f"/files/{stored}", {"Tus-Resumable": "1.0.0"})).expect(204)

    def download_target(self, stored: str) -> str:
        return f"/files/{stored}"


class Ceiling:
    """bench/ceiling.py: POST /upload/<name>?size=N per chunk, at its Upload-Offset; GET and DELETE /files/<name>."""

    async def upload(self, connection: Connection, name: str, data: memoryview, chunk: int | None) -> str:
        name = name.replace("/", "-")
        for offset, part in parts(data, chunk):
            headers = {"Upload-Offset": str(offset)}
            (await connection.request("POST", f"/upload/{name}?size={len(data)}", headers, part)).expect(204)
        return name

    async def remove(self, connection: Connection, stored: str) -> None:
        (await connection.request("DELETE", f"/files/{stored}")).expect(204)

    def download_target(self, stored: str) -> str:
        return f"/files/{stored}"
