"""The routes of the contract: each turns a request into one call on the upload core or catalog."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import Settings
from service.core.auth import Principal
from service.core.errors import BodyBrokenOff, InvalidRequest, UploadTooLarge
from service.core.model import Entry, NewUpload, Session
from service.http.download import BlobResponse, content_response
from service.http.models import (
    Bucket,
    BucketList,
    CompletedUploadResponse,
    CopyRequest,
    CreateUploadRequest,
    FileList,
    FileResponse,
    FileUploadResponse,
    TokenInfo,
)
from service.http.openapi import build_openapi
from service.ops import metrics
from service.services import Services

CONTENT_SUFFIX = ":content"
COPY_SUFFIX = ":copy"
DEFAULT_PAGE = 1000
MAX_PAGE = 10000
# A plain decimal number: ASCII digits only, with the optional whitespace (SP, HTAB) HTTP allows around a value.
HEADER_INT = re.compile(r"[ \t]*([0-9]+)[ \t]*")
MAX_HEADER_DIGITS = 4000


Body = TypeVar("Body", bound=BaseModel)


def json_response(model: BaseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(model.model_dump_json(), media_type="application/json", headers=headers)


class FilesAPI:
    def __init__(self, services: Services) -> None:
        self.core = services.core
        self.files = services.files
        self.settings = services.settings
        self.probe = services.probe
        self.probing: asyncio.Future[None] | None = None
        self.ping = services.client.ping
        self.auth = services.auth
        self.client = services.client
        self.keys = services.keys
        self.openapi = build_openapi()

    def principal(self, request: Request) -> Principal:
        return self.auth.authenticate(request.headers.get("authorization"))

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/openapi.json", self.openapi_json, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/v1/token", self.token, methods=["GET"]),
            Route("/v1/files", self.create_upload, methods=["POST"]),
            Route("/v1/files", self.list_buckets, methods=["GET"]),
            Route("/v1/files/session:{session_id}", self.upload_content, methods=["POST"]),
            Route("/v1/files/session:{session_id}", self.session_info, methods=["GET"]),
            Route("/v1/files/session:{session_id}", self.cancel_upload, methods=["DELETE"]),
            Route("/v1/files/{bucket}", self.list_files, methods=["GET"]),
            Route("/v1/files/{bucket}/{key:path}" + CONTENT_SUFFIX, self.download, methods=["GET", "HEAD"]),
            Route("/v1/files/{bucket}/{key:path}" + COPY_SUFFIX, self.copy, methods=["POST"]),
            Route("/v1/files/{bucket}/{key:path}", self.file, methods=["GET", "DELETE"]),
        ]

    def base_url(self, request: Request) -> str:
        return base_url(self.settings, request)

    def upload_response(self, request: Request, session: Session) -> Response:
        body = FileUploadResponse(
            id=session.id,
            url=f"{self.base_url(request)}/v1/files/session:{session.id}",
            offset=session.offset,
            size=None if session.length_deferred else session.size,
        )
        return json_response(body, headers={"Upload-Offset": str(session.offset)})

    def file_model(self, request: Request, entry: Entry) -> FileResponse:
        return FileResponse(
            bucket=entry.bucket,
            key=entry.key,
            mime_type=entry.mime_type,
            url=f"{self.base_url(request)}/v1/files/{entry.bucket}/{entry.key}{CONTENT_SUFFIX}",
            bytes=entry.bytes,
            created_at=entry.created_at,
            digest=f"blake3:{entry.digest}",
            metadata=entry.metadata,
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi_json(self, request: Request) -> Response:
        return JSONResponse(self.openapi)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text format; with tokens on, any valid token may scrape."""
        self.principal(request)
        stats = await self.client.hgetall(self.keys.blob_stats)
        body = metrics.exposition(metrics.BlobStoreStats(int(stats.get("blobs", 0)), int(stats.get("bytes", 0))))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def readyz(self, request: Request) -> Response:
        problems = []
        try:
            await asyncio.wait_for(self.ping(), timeout=2)
        except Exception as error:
            problems.append(f"Redis does not answer: {error}")
        if (problem := await self.store_problem()) is not None:
            problems.append(f"the store cannot take writes: {problem}")
        if problems:
            return JSONResponse({"detail": "; ".join(problems), "code": "not_ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def store_problem(self) -> str | None:
        """Why the store cannot take writes, or None. One probe at a time: while a store out of reach
        keeps one hanging, later checks wait on it too, rather than filling the threads uploads need."""
        if self.probing is None or self.probing.done():
            self.probing = asyncio.ensure_future(asyncio.to_thread(self.probe.probe))
        try:
            await asyncio.wait_for(asyncio.shield(self.probing), timeout=2)
        except TimeoutError:
            return "no answer within 2 s"
        except OSError as error:
            return str(error)
        return None

    async def token(self, request: Request) -> Response:
        principal = self.principal(request)
        return json_response(TokenInfo(name=principal.name, open=principal.open, buckets=principal.actions()))

    async def create_upload(self, request: Request) -> Response:
        principal = self.principal(request)  # before the body: without a valid token, 401 whatever it holds
        upload = await self.read_json(request, CreateUploadRequest)
        new = NewUpload(upload.bucket, upload.key, upload.mime_type, upload.size, upload.digest, upload.metadata)
        created = await self.core.create(new, principal, requester(request))
        if (entry := created.file) is not None:  # completed at once: empty, or deduplicated
            file = self.file_model(request, entry).model_dump()
            completed = CompletedUploadResponse(
                **file, id=created.session.id, offset=entry.bytes, size=entry.bytes, deduplicated=created.deduplicated
            )
            return json_response(completed)
        return self.upload_response(request, created.session)

    async def copy(self, request: Request) -> Response:
        principal = self.principal(request)
        target = await self.read_json(request, CopyRequest)
        source = request.path_params["bucket"], request.path_params["key"]
        entry = await self.files.copy(principal, source, (target.bucket, target.key), target.metadata)
        return json_response(self.file_model(request, entry))

    async def read_json(self, request: Request, model: type[Body]) -> Body:
        """The request's JSON body as `model`; InvalidRequest (400) saying what is wrong, else."""
        body = await read_limited(request, self.settings.max_json_bytes)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidRequest(f"the body is not valid JSON: {error}") from None
        try:
            return model.model_validate(payload)
        except ValidationError as error:
            raise InvalidRequest(describe(error)) from None

    async def upload_content(self, request: Request) -> Response:
        principal = self.principal(request)
        result = await self.core.write(
            request.path_params["session_id"],
            principal,
            request_body(request),
            upload_offset=header_int(request, "upload-offset"),
            content_length=header_int(request, "content-length"),
        )
        if isinstance(result, Entry):
            return json_response(self.file_model(request, result))
        return self.upload_response(request, result)

    async def session_info(self, request: Request) -> Response:
        principal = self.principal(request)
        return self.upload_response(request, await self.core.status(request.path_params["session_id"], principal))

    async def cancel_upload(self, request: Request) -> Response:
        principal = self.principal(request)
        await self.core.cancel(request.path_params["session_id"], principal)
        return Response(status_code=204)

    async def list_buckets(self, request: Request) -> Response:
        principal = self.principal(request)
        buckets = await self.files.buckets(principal)
        return json_response(BucketList(data=[Bucket(name=name) for name in buckets]))

    async def list_files(self, request: Request) -> Response:
        principal = self.principal(request)
        query = request.query_params
        limit = _query_int(query.get("limit"), "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        entries, has_more = await self.files.page(
            principal, request.path_params["bucket"], query.get("prefix", ""), query.get("after"), limit
        )
        return json_response(FileList(data=[self.file_model(request, entry) for entry in entries], has_more=has_more))

    async def file(self, request: Request) -> Response:
        principal = self.principal(request)
        bucket, key = request.path_params["bucket"], request.path_params["key"]
        if key.endswith(CONTENT_SUFFIX):
            # Only DELETE gets here: GET and HEAD of a `:content` path match the download route.
            raise HTTPException(405, headers={"Allow": "GET, HEAD"})
        if request.method == "DELETE":
            return json_response(self.file_model(request, await self.files.delete(principal, bucket, key)))
        return json_response(self.file_model(request, await self.files.info(principal, bucket, key)))

    async def download(self, request: Request) -> Response | BlobResponse:
        principal = self.principal(request)
        entry = await self.files.download(principal, request.path_params["bucket"], request.path_params["key"])
        return content_response(request, self.files, entry)


def requester(request: Request) -> str:
    """Whose open sessions a new one counts with when no token names it: the client's address."""
    return request.client.host if request.client else "unknown"


def base_url(settings: Settings, request: Request) -> str:
    """The base of the URLs the service hands out: FILES_PUBLIC_URL, else the one the request came to."""
    return settings.public_url or str(request.base_url).rstrip("/")


async def request_body(request: Request) -> AsyncIterator[bytes]:
    """The request body, with a client that went away told apart as a domain error."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise BodyBrokenOff("the request body broke off before it was complete") from None


async def read_limited(request: Request, limit: int) -> bytes:
    declared = header_int(request, "content-length")
    if declared is not None and declared > limit:
        raise UploadTooLarge(f"the JSON body is over {limit} bytes", limit=limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise UploadTooLarge(f"the JSON body is over {limit} bytes", limit=limit)
    return bytes(body)


def describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems)


def header_int(request: Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    match = HEADER_INT.fullmatch(raw)
    if match is None:
        raise InvalidRequest(f"header {name} must be a non-negative whole number, got {raw[:100]!r}")
    digits = match[1].lstrip("0") or "0"
    if len(digits) > MAX_HEADER_DIGITS:  # int() refuses such strings; no size or offset comes near
        raise InvalidRequest(f"header {name} is a number of {len(digits)} digits, out of any range")
    return int(digits)


def _query_int(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name} must be a whole number from {low} to {high}, got {raw!r}")
    return int(raw)
