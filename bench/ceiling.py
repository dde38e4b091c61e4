"""The ceiling: the least a Starlette app under uvicorn can do to store an upload and serve it back.

Whatever the service does on top (sessions in Redis, hashing, a content-addressed blob, an
entry) can only cost; this app shows how fast the same stack goes without any of it, with
the same durability at the end: a completed upload is fsynced before the reply.

- `POST /upload/<name>?size=N` writes the body at `Upload-Offset` (default 0) as it streams in;
  the request that brings the file to `size` bytes fsyncs it (in a thread, so that other
  uploads go on meanwhile).
- `GET /files/<name>` serves the file, or one `Range: bytes=a-b`, in 1 MiB reads; `DELETE` removes it.

Run as one process under the service's uvicorn settings: `python bench/ceiling.py --port P --dir D`.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

from appserver import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

READ_SIZE = 1024 * 1024
RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _write_all(fd: int, data: bytes, position: int) -> int:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, position)
        position += written
        view = view[written:]
    return position


def _reads(fd: int, start: int, length: int) -> Iterator[bytes]:
    """Large reads straight from the page cache; the descriptor is closed when the body ends."""
    try:
        position, end = start, start + length
        while position < end:
            data = os.pread(fd, min(READ_SIZE, end - position), position)
            if not data:
                return
            position += len(data)
            yield data
    finally:
        os.close(fd)


def create_app(folder: str) -> Starlette:
    directory = Path(folder)
    directory.mkdir(parents=True, exist_ok=True)

    def path_of(request: Request) -> Path:
        name = request.path_params["name"]
        if "/" in name or name.startswith("."):
            raise ValueError(name)
        return directory / name

    async def upload(request: Request) -> Response:
        size = int(request.query_params["size"])
        position = int(request.headers.get("upload-offset", "0"))
        fd = os.open(path_of(request), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            async for chunk in request.stream():
                position = _write_all(fd, chunk, position)
            if position >= size:
                await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)
        return Response(status_code=204, headers={"Upload-Offset": str(position)})

    async def download(request: Request) -> Response:
        fd = os.open(path_of(request), os.O_RDONLY)
        size = os.fstat(fd).st_size
        start, length, status, headers = 0, size, 200, {"Accept-Ranges": "bytes"}
        if (match := RANGE.fullmatch(request.headers.get("range", ""))) is not None:
            start = int(match[1])
            last = min(int(match[2]) if match[2] else size - 1, size - 1)
            length, status = last - start + 1, 206
            headers["Content-Range"] = f"bytes {start}-{last}/{size}"
        headers["Content-Length"] = str(length)
        return StreamingResponse(
            _reads(fd, start, length), status_code=status, headers=headers, media_type="application/octet-stream"
        )

    async def delete(request: Request) -> Response:
        path_of(request).unlink()
        return Response(status_code=204)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/upload/{name}", upload, methods=["POST"]),
            Route("/files/{name}", download, methods=["GET"]),
            Route("/files/{name}", delete, methods=["DELETE"]),
        ]
    )


if __name__ == "__main__":
    serve(create_app, __doc__)
