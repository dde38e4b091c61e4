"""The tus 1.0.0 front at /tus/: the same upload sessions as the seed's API, spoken in tus.

Each handler turns a tus request into one call on `UploadCore` (a tus upload is a session:
the same id, `GET /v1/files/session:<id>` reports it) and `answer` is the one place where
the core's errors become tus answers. Extensions: creation, creation-with-upload,
creation-defer-length, termination, checksum, expiration and concatenation
(https://tus.io/protocols/resumable-upload). A partial upload is a part of the core
(`NewUpload.part`); a final upload is created and concatenated (`UploadCore.concatenate`) in
one request, over finished parts only (no `concatenation-unfinished`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import Settings
from service.core import names
from service.core.auth import Principal
from service.core.digests import ChunkChecksum
from service.core.errors import FilesError, InvalidRequest, SessionCompleted
from service.core.model import Entry, NewUpload, Session
from service.http.errors import error_response, files_error
from service.http.routes import base_url, header_int, request_body, requester
from service.services import Services

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation"
CHUNK_TYPE = "application/offset+octet-stream"
DEFAULT_MIME_TYPE = "application/octet-stream"
# What a browser may send and read, for the CORS settings (service/http/app.py).
REQUEST_HEADERS = [
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Defer-Length",
    "Upload-Checksum",
    "Upload-Concat",
    "X-HTTP-Method-Override",
]
EXPOSED_HEADERS = [
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Concat",
]

Handler = Callable[[Request], Awaitable[Response]]


class TusAPI:
    def __init__(self, services: Services) -> None:
        self.core = services.core
        self.auth = services.auth
        self.settings = services.settings

    def routes(self) -> list[Route]:
        return [
            Route("/tus/", self.answer(self.options, versioned=False), methods=["OPTIONS"]),
            Route("/tus/", self.answer(self.create), methods=["POST"]),
            # Every method, so that each answer about an upload, a 405 too, is a tus answer.
            Route("/tus/{upload_id}", self.answer(self.upload), methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    async def upload(self, request: Request) -> Response:
        """`/tus/<id>`: HEAD, PATCH or DELETE, also as a POST that names one of them in
        `X-HTTP-Method-Override` (tus's core protocol: for clients that cannot send PATCH or DELETE)."""
        method = request.method
        if method == "POST" and (override := request.headers.get("x-http-method-override")) is not None:
            method = override.strip().upper()
        handlers = {"HEAD": self.head, "PATCH": self.patch, "DELETE": self.terminate}
        if method not in handlers:
            return error_response(
                405, "an upload takes HEAD, PATCH and DELETE", "http_405", {"Allow": ", ".join(handlers)}
            )
        return await handlers[method](request)

    async def options(self, request: Request) -> Response:
        self.auth.authenticate(request.headers.get("authorization"))
        return Response(
            status_code=204,
            headers={
                "Tus-Version": VERSION,
                "Tus-Extension": EXTENSIONS,
                "Tus-Max-Size": str(self.core.max_upload_bytes),
                "Tus-Checksum-Algorithm": ",".join(ChunkChecksum.ALGORITHMS),
            },
        )

    async def create(self, request: Request) -> Response:
        """creation (Upload-Length, or Upload-Defer-Length: 1), with the first chunk as its body when
        the body is `application/offset+octet-stream` (creation-with-upload)."""
        principal = self.auth.authenticate(request.headers.get("authorization"))
        concat = request.headers.get("upload-concat")
        if concat is not None and concat.strip() != "partial":
            return await self.create_final(request, principal, _final_parts(concat))
        size = _declared_length(request)
        upload = self._new_upload(request, size, part=concat is not None)
        created = await self.core.create(upload, principal, requester(request))
        session = created.session
        offset = 0
        if created.file is None and _is_chunk(request):
            try:
                result = await self.core.write(
                    session.id,
                    principal,
                    request_body(request),
                    upload_offset=0,
                    content_length=header_int(request, "content-length"),
                    check=_checksum(request),
                )
            except FilesError:
                # The client learns no Location from an error: an upload it could not resume or
                # terminate would only count against its open uploads until it expired.
                with contextlib.suppress(FilesError):
                    await self.core.cancel(session.id, principal)
                raise
            offset = result.bytes if isinstance(result, Entry) else result.offset
        headers = {"Location": f"{base_url(self.settings, request)}/tus/{session.id}", "Upload-Offset": str(offset)}
        return Response(status_code=201, headers=headers | self._expires())

    async def create_final(self, request: Request, principal: Principal, part_ids: list[str]) -> Response:
        """concatenation: the final upload, made from its finished parts at once. Its Upload-Metadata
        decides the bucket, key and metadata (the parts' is not kept); should the parts not make it
        (unknown: 404, unfinished: 400), the final upload is not kept either."""
        if "upload-length" in request.headers or "upload-defer-length" in request.headers:
            raise InvalidRequest("a final upload takes its length from its parts: send no Upload-Length")
        session = (await self.core.create(self._new_upload(request, None), principal, requester(request))).session
        try:
            entry = await self.core.concatenate(session.id, part_ids, principal)
        except FilesError:
            await self.core.cancel(session.id, principal)
            raise
        location = f"{base_url(self.settings, request)}/tus/{session.id}"
        headers = {"Location": location, "Upload-Offset": str(entry.bytes)}
        return Response(status_code=201, headers=headers | self._expires())

    def _new_upload(self, request: Request, size: int | None, part: bool = False) -> NewUpload:
        return new_upload(parse_metadata(request.headers.get("upload-metadata")), size, self.settings, part)

    async def head(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        session = await self.core.status(request.path_params["upload_id"], principal, "write")
        headers = {"Upload-Offset": str(session.offset), "Cache-Control": "no-store"}
        if session.length_deferred:
            headers["Upload-Defer-Length"] = "1"
        else:
            headers["Upload-Length"] = str(session.size)
        if session.metadata:
            headers["Upload-Metadata"] = format_metadata(session.metadata)
        if session.part:
            headers["Upload-Concat"] = "partial"
        elif session.parts:
            base = base_url(self.settings, request)
            headers["Upload-Concat"] = "final;" + " ".join(f"{base}/tus/{part_id}" for part_id in session.parts)
        return Response(status_code=200, headers=headers | self._expires())

    async def patch(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        if not _is_chunk(request):
            return error_response(415, f"a PATCH must have Content-Type: {CHUNK_TYPE}", "unsupported_media_type")
        offset = header_int(request, "upload-offset")
        if offset is None:
            raise InvalidRequest("a PATCH must say where its chunk starts in Upload-Offset")
        try:
            result: Session | Entry = await self.core.write(
                request.path_params["upload_id"],
                principal,
                request_body(request),
                upload_offset=offset,
                content_length=header_int(request, "content-length"),
                size=header_int(request, "upload-length"),
                check=_checksum(request),
            )
        except SessionCompleted:
            if (await self.core.status(request.path_params["upload_id"], principal, "write")).parts:
                return error_response(403, "a final upload takes no PATCH: its content is its parts'", "final_upload")
            raise
        new_offset = result.bytes if isinstance(result, Entry) else result.offset
        return Response(status_code=204, headers={"Upload-Offset": str(new_offset)} | self._expires())

    async def terminate(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        await self.core.cancel(request.path_params["upload_id"], principal)
        return Response(status_code=204)

    def _expires(self) -> dict[str, str]:
        """Upload-Expires: every request on a session renews its time to live, this one included."""
        return {"Upload-Expires": formatdate(time.time() + self.settings.session_ttl_seconds, usegmt=True)}

    def answer(self, handler: Handler, versioned: bool = True) -> Handler:
        """The handler with the tus rules every answer follows: Tus-Resumable on each, 412 (with
        Tus-Version) for a request of another version, the core's errors as tus answers, and
        Upload-Expires on each answer about an upload that is still there."""

        async def endpoint(request: Request) -> Response:
            if versioned and request.headers.get("tus-resumable") != VERSION:
                response: Response = error_response(
                    412,
                    f"this server speaks tus {VERSION}; send Tus-Resumable: {VERSION}",
                    "unsupported_version",
                    {"Tus-Version": VERSION},
                )
            else:
                try:
                    response = await handler(request)
                except FilesError as error:
                    # The statuses are the seed's (service/http/errors.py): tus names no others but 460,
                    # which is there too; only the headers differ.
                    response = await files_error(request, error)
                # A 404 says the upload is not there for this client: no second look for its expiry.
                if response.status_code >= 400 and response.status_code != 404 and "upload_id" in request.path_params:
                    response.headers.update(await self._expires_if_kept(request))
            response.headers["Tus-Resumable"] = VERSION
            return response

        endpoint.__name__ = endpoint.__qualname__ = handler.__name__
        return endpoint

    async def _expires_if_kept(self, request: Request) -> dict[str, str]:
        """Upload-Expires for an error answer about an upload, when the upload is there for this client
        (looking it up renews its time to live, as any request on it does); else nothing."""
        try:
            principal = self.auth.authenticate(request.headers.get("authorization"))
            await self.core.status(request.path_params["upload_id"], principal, "write")
        except FilesError:
            return {}
        return self._expires()


def new_upload(
    metadata: dict[str, str], size: int | None, settings: Settings, part: bool = False, media_type: str | None = None
) -> NewUpload:
    """The upload that the `Upload-Metadata` pairs ask for, with the contract's defaults for what they
    leave out (the IETF draft's front, service/http/resumable.py, creates its uploads with it too, and
    gives the `media_type` of its request, which counts when the metadata names none and it is valid)."""
    session_id = names.new_session_id()
    if media_type is not None and names.mime_type_error(media_type) is not None:
        media_type = None
    return NewUpload(
        bucket=metadata.get("bucket", settings.tus_bucket),
        key=metadata.get("key") or names.default_key(session_id, metadata.get("filename") or metadata.get("name")),
        mime_type=metadata.get("filetype") or metadata.get("type") or media_type or DEFAULT_MIME_TYPE,
        size=size,
        metadata=metadata,
        session_id=session_id,
        part=part,
    )


def parse_metadata(header: str | None) -> dict[str, str]:
    """`Upload-Metadata`: comma-separated pairs of a name and, after a space, its value in base64
    (a name alone has the value ''). A value that is not base64 or not UTF-8 is refused (400)."""
    metadata: dict[str, str] = {}
    for pair in (header or "").split(","):
        if not pair.strip():
            continue
        name, _, encoded = pair.strip().partition(" ")
        try:
            value = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"Upload-Metadata: the value of {name[:64]!r} is not UTF-8 in base64") from None
        if name in metadata:
            raise InvalidRequest(f"Upload-Metadata: {name[:64]!r} is given twice")
        metadata[name] = value
    if (problem := names.metadata_error(metadata)) is not None:
        raise InvalidRequest(f"Upload-Metadata: {problem}")
    return metadata


def format_metadata(metadata: Mapping[str, str]) -> str:
    return ",".join(
        f"{name} {base64.b64encode(value.encode()).decode()}" if value else name for name, value in metadata.items()
    )


def _final_parts(header: str) -> list[str]:
    """The upload ids of `Upload-Concat: final;<url> <url> ...` (paths or full URLs of /tus/<id>)."""
    kind, _, urls = header.partition(";")
    if kind.strip() != "final" or not urls.split():
        raise InvalidRequest("Upload-Concat must be 'partial' or 'final;' and the URLs of the partial uploads")
    part_ids = []
    for url in urls.split():
        parent, _, upload_id = urlsplit(url).path.rstrip("/").rpartition("/")
        if not parent.endswith("/tus"):
            raise InvalidRequest(f"Upload-Concat: {url[:200]!r} is not the URL of an upload here")
        part_ids.append(upload_id)
    return part_ids


def _declared_length(request: Request) -> int | None:
    """Upload-Length, or None for Upload-Defer-Length: 1; exactly one of them."""
    length = header_int(request, "upload-length")
    deferred = request.headers.get("upload-defer-length")
    if deferred is not None and deferred.strip() != "1":
        raise InvalidRequest("Upload-Defer-Length must be 1")
    if (length is None) == (deferred is None):
        raise InvalidRequest("a new upload needs either Upload-Length or Upload-Defer-Length: 1")
    return length


def _is_chunk(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == CHUNK_TYPE


def _checksum(request: Request) -> ChunkChecksum | None:
    """Upload-Checksum: `<algorithm> <base64 digest>` of the chunk in this request's body."""
    header = request.headers.get("upload-checksum")
    if header is None:
        return None
    algorithm, _, encoded = header.strip().partition(" ")
    if not encoded.strip():
        raise InvalidRequest("Upload-Checksum must be '<algorithm> <base64 digest>'")
    if algorithm not in ChunkChecksum.ALGORITHMS:
        raise InvalidRequest(f"Upload-Checksum: the algorithm must be one of {', '.join(ChunkChecksum.ALGORITHMS)}")
    try:
        expected = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise InvalidRequest("Upload-Checksum: the checksum is not base64") from None
    return ChunkChecksum(algorithm, expected)
