"""OpenAI's Files API at /v1/openai/v1 (where llama-stack serves it): the same files, spoken as OpenAI.

A file is an entry in the bucket FILES_OPENAI_BUCKET under the key of its id, its `filename`,
`purpose` and `expires_at` kept as metadata, so it is deduplicated with every other file and
visible through the seed's API. Ids begin with the creation time in milliseconds (fixed-width
hex), so key order is OpenAI's order (`created_at`, then id) and a listing page is one range
read of the index, either way and for one purpose alike. Each handler turns a request into
calls on the core; `answer` is the one place where errors become OpenAI's error objects.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import get_args

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from service.core import names
from service.core.errors import DigestMismatch, FileNotFound, FilesError, InvalidRequest
from service.core.model import Entry, NewUpload
from service.http.download import BlobResponse, content_response
from service.http.errors import STATUS
from service.http.multipart import FormReader
from service.http.openai_models import (
    OpenAIError,
    OpenAIErrorDetail,
    OpenAIFile,
    OpenAIFileDeleted,
    OpenAIFileList,
    Purpose,
)
from service.http.routes import json_response, request_body
from service.services import Services

PREFIX = "/v1/openai/v1"
FILE_PREFIX = "file-"
PURPOSES: tuple[str, ...] = get_args(Purpose)
DEFAULT_MIME_TYPE = "application/octet-stream"
DEFAULT_PAGE = MAX_PAGE = 10000
MAX_FIELD_BYTES = 1024
# The form's fields that are kept, before or after `file`; any other is read past (memory stays bounded).
FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")
# OpenAI answers these with 400 where the seed API has statuses of its own.
OPENAI_STATUS: dict[type[FilesError], int] = {DigestMismatch: 400}

log = logging.getLogger("files.openai")

Handler = Callable[[Request], Awaitable[Response | BlobResponse]]


def new_file_id(now: float) -> str:
    """`file-` + the time in milliseconds (12 hex digits, sorting as the time does) + 16 random hex."""
    return f"{FILE_PREFIX}{int(now * 1000):012x}{secrets.token_hex(8)}"


def created_at(entry: Entry) -> int:
    """The unix second the file was created: the one in its id (an entry of another key: its own)."""
    stamp = entry.key[len(FILE_PREFIX) : len(FILE_PREFIX) + 12]
    if entry.key.startswith(FILE_PREFIX) and len(stamp) == 12 and all(c in "0123456789abcdef" for c in stamp):
        return int(stamp, 16) // 1000
    return entry.created_at


def file_object(entry: Entry) -> OpenAIFile:
    expires_at = entry.metadata.get("expires_at", "")
    return OpenAIFile(
        id=entry.key,
        bytes=entry.bytes,
        created_at=created_at(entry),
        expires_at=int(expires_at) if expires_at.isascii() and expires_at.isdigit() else None,
        filename=entry.metadata.get("filename", entry.key),
        purpose=entry.metadata.get("purpose", "user_data"),
    )


class OpenAIFilesAPI:
    def __init__(self, services: Services) -> None:
        self.core = services.core
        self.files = services.files
        self.auth = services.auth
        self.bucket = services.settings.openai_bucket

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/files", answer(self.create_file), methods=["POST"]),
            Route(f"{PREFIX}/files", answer(self.list_files), methods=["GET"]),
            Route(f"{PREFIX}/files/{{file_id}}", answer(self.retrieve_file), methods=["GET"]),
            Route(f"{PREFIX}/files/{{file_id}}", answer(self.delete_file), methods=["DELETE"]),
            Route(f"{PREFIX}/files/{{file_id}}/content", answer(self.file_content), methods=["GET", "HEAD"]),
        ]

    async def create_file(self, request: Request) -> Response:
        """Multipart `file`, `purpose` and `expires_after[...]`, in any order: the file's content streams into
        a session of no declared size, and the file is committed once the form has ended well, with the
        metadata of every field (a bad `purpose` given before the file is refused before it is read)."""
        principal = self.auth.authenticate(request.headers.get("authorization"))
        principal.require("write", self.bucket)  # before the body: a refused upload reads none of it
        form = FormReader(request.headers.get("content-type", ""), request_body(request))
        fields: dict[str, str] = {}
        session_id: str | None = None
        filename, now = "file", time.time()
        try:
            while (part := await form.next_part()) is not None:
                if part.name in FIELDS:
                    fields[part.name] = await form.text(MAX_FIELD_BYTES)
                if part.name != "file":
                    continue
                if session_id is not None:
                    raise InvalidRequest("the form has more than one 'file'", param="file")
                filename, now = part.filename or "file", time.time()
                # The fields so far, checked; those that follow the file are added when the form ends.
                metadata = _file_metadata(fields, filename, now) if "purpose" in fields else {"filename": filename}
                upload = NewUpload(
                    bucket=self.bucket,
                    key=new_file_id(now),
                    mime_type=_mime_type(part.content_type),
                    size=None,
                    metadata=metadata,
                )
                requester = request.client.host if request.client else "unknown"
                created = await self.core.create(upload, principal, requester)
                session_id = created.session.id
                await self.core.write(session_id, principal, form.content(), upload_offset=0, content_length=None)
            metadata = _file_metadata(fields, filename, now)  # a missing or bad purpose is said first
            if session_id is None:
                raise InvalidRequest("the form has no 'file'", param="file")
            entry = await self.core.write(
                session_id, principal, _nothing(), upload_offset=None, content_length=0, last=True, metadata=metadata
            )
        except BaseException:
            if session_id is not None:
                with contextlib.suppress(FilesError, RedisError):
                    await self.core.cancel(session_id, principal)
            raise
        assert isinstance(entry, Entry)
        return json_response(file_object(entry))

    async def list_files(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        query = request.query_params
        limit = _limit(query.get("limit"))
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(f"order must be 'asc' or 'desc', got {order[:40]!r}", param="order")
        purpose = query.get("purpose")
        entries, has_more = await self.files.page(
            principal, self.bucket, FILE_PREFIX, query.get("after"), limit, reverse=order == "desc", purpose=purpose
        )
        data = [file_object(entry) for entry in entries]
        first_id, last_id = (data[0].id, data[-1].id) if data else (None, None)
        return json_response(OpenAIFileList(data=data, first_id=first_id, last_id=last_id, has_more=has_more))

    async def retrieve_file(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        return json_response(file_object(await self.files.info(principal, self.bucket, _file_key(request))))

    async def delete_file(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        entry = await self.files.delete(principal, self.bucket, _file_key(request))
        return json_response(OpenAIFileDeleted(id=entry.key))

    async def file_content(self, request: Request) -> Response | BlobResponse:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        entry = await self.files.download(principal, self.bucket, _file_key(request))
        return content_response(request, self.files, entry)


def not_found_route(routes: Sequence[Route]) -> Route:
    """Any other request under the prefix, in OpenAI's shape too (the SDK raises by its status): 405 with
    Allow on a path of `routes` that takes other methods, else 404. Routed after `routes`."""

    async def no_route(request: Request) -> Response:
        allowed = sorted(
            {
                method
                for route in routes
                if route.matches(request.scope)[0] is Match.PARTIAL
                for method in route.methods or ()
            }
        )
        if allowed:
            message = f"{request.method} is not allowed on {request.url.path[:200]}: {', '.join(allowed)} are"
            return error_object(405, message, "method_not_allowed", headers={"Allow": ", ".join(allowed)})
        return error_object(404, f"no route {request.method} {request.url.path[:200]}", "not_found")

    return Route(f"{PREFIX}/{{path:path}}", no_route, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])


def answer(handler: Handler) -> Handler:
    """The handler with the core's errors (and an unavailable Redis) as OpenAI's error objects."""

    async def endpoint(request: Request) -> Response | BlobResponse:
        try:
            return await handler(request)
        except FilesError as error:
            status = OPENAI_STATUS.get(type(error)) or next(
                code for kind, code in STATUS.items() if isinstance(error, kind)
            )
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            param = error.fields.get("param")
            return error_object(status, error.detail, error.code, param if isinstance(param, str) else None, headers)
        except RedisError as error:
            log.error("Redis is unavailable on %s %s: %s", request.method, request.url.path, error)
            return error_object(503, "the session store (Redis) is unavailable; try again shortly", "unavailable")

    endpoint.__name__ = endpoint.__qualname__ = handler.__name__
    return endpoint


def error_object(
    status: int, message: str, code: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """OpenAI's error shape; `type` as OpenAI's: a client's mistake, or the server's."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = OpenAIError(error=OpenAIErrorDetail(message=message, type=kind, param=param, code=code))
    return Response(body.model_dump_json(), status_code=status, headers=headers, media_type="application/json")


def _file_metadata(fields: dict[str, str], filename: str, now: float) -> dict[str, str]:
    """The entry's metadata from the form's fields: `purpose` (checked), the file name, and
    `expires_at` from `expires_after[anchor]` = created_at and `expires_after[seconds]`."""
    purpose = fields.get("purpose")
    if purpose is None:
        raise InvalidRequest("'purpose' is missing", param="purpose")
    if purpose not in PURPOSES:
        raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose[:40]!r}", param="purpose")
    metadata = {"filename": filename, "purpose": purpose}
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is not None or seconds is not None:
        if anchor != "created_at":
            raise InvalidRequest("expires_after[anchor] must be 'created_at'", param="expires_after[anchor]")
        if seconds is None or not seconds.isascii() or not seconds.isdigit():
            raise InvalidRequest("expires_after[seconds] must be a whole number", param="expires_after[seconds]")
        metadata["expires_at"] = str(int(now) + int(seconds))
    return metadata


def _mime_type(content_type: str | None) -> str:
    if content_type is None or names.mime_type_error(content_type) is not None:
        return DEFAULT_MIME_TYPE
    return content_type


def _file_key(request: Request) -> str:
    """The file id of the path; one that cannot be a key names no file (404, not 400)."""
    file_id: str = request.path_params["file_id"]
    if names.key_error(file_id) is not None:
        raise FileNotFound(f"no file {file_id[:80]!r}")
    return file_id


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}, got {raw[:40]!r}", param="limit")
    return int(raw)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield
