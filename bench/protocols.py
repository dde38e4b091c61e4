"""How each system is asked to store an upload and serve it back: the service's API, tus, the ceiling's.

Each upload is what a client of that system does for one file: the service and tus create a
session (tus: an upload) and then send the body, whole or in chunks at explicit offsets; the
ceiling has no session and takes the body at once. Each returns the name the stored upload
goes by, which the benchmark uses to flush it (for systems that do not) and to delete it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any, Protocol
from urllib.parse import urlsplit

from clients import Connection, HTTPError, parts

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
    """tus 1.0 at `path` (`/files` on the peers): POST for a Location (creation), then one PATCH per chunk.

    The requests tus-js-client sends, on the benchmark's lean client: tus-js-client itself
    under Node.js would cost the shared cores more than the servers it measures.
    """

    def __init__(self, path: str = "/files") -> None:
        self.path = path

    def metadata(self, name: str) -> dict[str, str]:
        """The Upload-Metadata pairs of an upload, as tus-js-client is given them."""
        return {"filename": name, "filetype": "application/octet-stream"}

    def stored(self, name: str, upload_id: str) -> str:
        """The name a completed upload goes by, for the flush and `remove`."""
        return upload_id

    async def upload(self, connection: Connection, name: str, data: memoryview, chunk: int | None) -> str:
        location = await self._create(connection, {"Upload-Length": str(len(data))}, self.metadata(name))
        for offset, part in parts(data, chunk):
            await self._patch(connection, location, offset, part)
        return self.stored(name, location.rsplit("/", 1)[-1])

    async def offers_concatenation(self, connection: Connection) -> bool:
        """Whether OPTIONS lists the concatenation extension, which parallel uploads need."""
        answer = await connection.request("OPTIONS", f"{self.path.rstrip('/')}/", {"Tus-Resumable": "1.0.0"})
        offered = answer.headers.get("tus-extension", "").split(",") if answer.status in (200, 204) else []
        return "concatenation" in offered

    async def upload_parallel(self, connections: list[Connection], name: str, data: memoryview) -> list[str]:
        """tus-js-client's `parallelUploads: len(connections)`: one partial upload per connection, each
        sent whole at the same time, then the final upload naming them in order; the stored names
        of the final and of the partials (removed with it, where the server keeps them)."""
        step = -(-len(data) // len(connections))
        slices = [data[offset : offset + step] for offset in range(0, len(data), step)]

        async def partial(connection: Connection, part: memoryview) -> str:
            headers = {"Upload-Length": str(len(part)), "Upload-Concat": "partial"}
            location = await self._create(connection, headers, {})
            await self._patch(connection, location, 0, part)
            return location

        locations = await asyncio.gather(*map(partial, connections, slices))
        final = await self._create(
            connections[0], {"Upload-Concat": "final;" + " ".join(locations)}, self.metadata(name)
        )
        return [self.stored(name, final.rsplit("/", 1)[-1]), *(location.rsplit("/", 1)[-1] for location in locations)]

    async def _create(self, connection: Connection, headers: dict[str, str], metadata: dict[str, str]) -> str:
        """POST an upload; its Location, as the server gives it (a final upload names its parts by it)."""
        encoded = ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items())
        headers = {"Tus-Resumable": "1.0.0", **headers, **({"Upload-Metadata": encoded} if encoded else {})}
        created = await connection.request("POST", self.path, headers)
        return created.expect(201).headers["location"]

    async def _patch(self, connection: Connection, location: str, offset: int, part: memoryview) -> None:
        headers = {
            "Tus-Resumable": "1.0.0",
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        }
        (await connection.request("PATCH", urlsplit(location).path, headers, part)).expect(204)

    async def remove(self, connection: Connection, stored: str) -> None:
        (await connection.request("DELETE", self.download_target(stored), {"Tus-Resumable": "1.0.0"})).expect(204)

    async def remove_partials(self, connection: Connection, partials: list[str]) -> None:
        """Terminate the partial uploads of a final one, those the server still keeps: one that the final
        has consumed may be gone (404, 410) or refuse as complete (409)."""
        for upload_id in partials:
            target = f"{self.path.rstrip('/')}/{upload_id}"
            (await connection.request("DELETE", target, {"Tus-Resumable": "1.0.0"})).expect(204, 404, 409, 410)

    def download_target(self, stored: str) -> str:
        return f"{self.path.rstrip('/')}/{stored}"


class ServiceTus(Tus):
    """The service's tus front at /tus/: the bucket and key in Upload-Metadata, as a client of it sends
    them; a completed upload is a file, removed through the service's API."""

    def __init__(self) -> None:
        super().__init__("/tus/")

    def metadata(self, name: str) -> dict[str, str]:
        return {"bucket": BUCKET, "key": name, **super().metadata(name)}

    def stored(self, name: str, upload_id: str) -> str:
        return name

    async def remove(self, connection: Connection, stored: str) -> None:
        await FilesAPI().remove(connection, stored)

    def download_target(self, stored: str) -> str:
        return FilesAPI().download_target(stored)


class OpenAIFiles:
    """The service's OpenAI front through the `openai` SDK itself: `files.create` with an open file, the
    multipart body built and streamed by the SDK (httpx), as a platform team's code sends it."""

    prefix = "/v1/openai/v1"

    def __init__(self) -> None:
        from openai import OpenAI  # here, not atop the module: only workload 9 needs the SDK installed

        self._sdk = OpenAI
        self._clients: dict[tuple[str, int], Any] = {}

    def _client(self, connection: Connection) -> Any:
        """One SDK client per server, its connection pool kept between uploads."""
        address = (connection.host, connection.port)
        if address not in self._clients:
            base_url = f"http://{connection.host}:{connection.port}{self.prefix}"
            self._clients[address] = self._sdk(base_url=base_url, api_key="bench", max_retries=0, timeout=600)
        return self._clients[address]

    async def upload(self, connection: Connection, name: str, data: memoryview, chunk: int | None) -> str:
        if chunk is not None:
            raise ValueError("files.create sends a file in one request")
        file = (name.replace("/", "-"), BufferFile(data), "application/octet-stream")
        created = await asyncio.to_thread(self._client(connection).files.create, file=file, purpose="user_data")
        if created.bytes != len(data):
            raise HTTPError(f"files.create stored {created.bytes} bytes of {len(data)}")
        return str(created.id)

    async def remove(self, connection: Connection, stored: str) -> None:
        (await connection.request("DELETE", f"{self.prefix}/files/{stored}")).expect(200, 404)

    def download_target(self, stored: str) -> str:
        return f"{self.prefix}/files/{stored}/content"


class BufferFile(io.RawIOBase):
    """A read-only, seekable file over a buffer, without copying it: what the SDK is handed where a user
    hands it `open(path, "rb")` (httpx reads it in 64 KiB pieces and takes its length from seek/tell)."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._data)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        piece = self._data[self._position : self._position + len(buffer)]
        memoryview(buffer).cast("B")[: len(piece)] = piece
        self._position += len(piece)
        return len(piece)


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
