"""The one place where errors become HTTP responses: always JSON with a `detail`."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.core import errors

log = logging.getLogger("files.http")

STATUS: dict[type[errors.FilesError], int] = {
    errors.InvalidRequest: 400,
    errors.BodyBrokenOff: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.BodyStalled: 408,
    errors.SessionNotFound: 404,
    errors.FileNotFound: 404,
    errors.OffsetMismatch: 409,
    errors.SessionBusy: 409,
    errors.SessionCompleted: 409,
    errors.UploadTooLarge: 413,
    errors.RangeNotSatisfiable: 416,
    errors.DigestMismatch: 422,
    errors.TooManySessions: 429,
    errors.ChecksumMismatch: 460,  # tus's status for it
    errors.Unavailable: 503,
    errors.InsufficientStorage: 507,
}


def error_response(
    status: int, detail: str, code: str, headers: Mapping[str, str] | None = None, **fields: object
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code, **fields}, status_code=status, headers=headers)


def status_of(error: errors.FilesError) -> int:
    return next(code for kind, code in STATUS.items() if isinstance(error, kind))


async def files_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, errors.FilesError)
    return error_response(status_of(error), error.detail, error.code, error_headers(error), **error.fields)


def error_headers(error: errors.FilesError) -> dict[str, str]:
    """The headers an error's answer carries whatever the protocol: where to resume, how to authenticate."""
    headers = {}
    if "offset" in error.fields:
        headers["Upload-Offset"] = str(error.fields["offset"])
    if isinstance(error, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, errors.BodyBrokenOff | errors.BodyStalled):
        headers["Connection"] = "close"
    if isinstance(error, errors.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{error.fields['size']}"
    return headers


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    detail = {404: "no such route", 405: "method not allowed on this route"}.get(error.status_code, error.detail)
    return error_response(error.status_code, detail, f"http_{error.status_code}", error.headers)


async def redis_unavailable(request: Request, error: Exception) -> Response:
    """Redis out of reach past the client's retries, or answering with an error (a replica that was the
    master, still loading, out of memory): the request may succeed once it is back, so 503, not 500."""
    if isinstance(error, RedisConnectionError | RedisTimeoutError):
        log.error("Redis did not answer on %s %s: %s", request.method, request.url.path, error)
    else:
        log.error("Redis refused a command on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(503, "the session store (Redis) is unavailable; try again shortly", "unavailable")


async def storage_unavailable(request: Request, error: Exception) -> Response:
    """The object store out of reach past its client's retries: like Redis, 503, and the client resumes."""
    log.error("the store did not answer on %s %s: %s", request.method, request.url.path, error)
    return error_response(503, "the storage is unavailable; try again shortly", "unavailable")


async def data_directory_tampered(request: Request, error: Exception) -> Response:
    log.error("refused a path in the data directory on %s %s: %s", request.method, request.url.path, error)
    return error_response(
        500,
        "the data directory holds a symbolic link where the service keeps its files; it was not followed. "
        "An operator must look (the log names the path)",
        "data_directory_link",
    )


async def server_error(request: Request, error: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal server error; it has been logged", "internal")


HANDLERS = {
    errors.FilesError: files_error,
    HTTPException: http_error,
    RedisError: redis_unavailable,
    errors.OutsideRoot: data_directory_tampered,
    errors.StorageUnavailable: storage_unavailable,
    Exception: server_error,
}
