"""The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload) at /tus/, beside tus.

A request in the draft carries `Upload-Draft-Interop-Version`; `DraftRoute` takes exactly those, so
tus (service/http/tus.py) keeps every other request to /tus/. An upload resource is a session of the
upload core, as a tus upload is: the same id, `GET /v1/files/session:<id>` reports it. The drafts
differ in little a server sees (`DRAFTS`); `answer` is the one place where the core's errors become
RFC 9457 problem details.

What is not done: the interim `104 (Upload Resumption Supported)`. uvicorn's HTTP/1.1 protocols
(httptools, h11) send no informational response an application asks for (only `100 Continue`, by
themselves), and ASGI names one only for `103 Early Hints` (`http.response.early_hint`, with Link
headers only), so a client learns the upload's URL from the final answer to its creation request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from service.core.auth import Principal
from service.core.errors import (
    FilesError,
    InconsistentLength,
    InvalidRequest,
    OffsetMismatch,
    SessionCompleted,
    SessionNotFound,
    UploadRestarted,
    UploadTooLarge,
)
from service.core.model import Entry, Session
from service.core.uploads import empty_body
from service.http.errors import error_headers, status_of
from service.http.routes import base_url, header_int, request_body, requester
from service.http.tus import CHUNK_TYPE, new_upload, parse_metadata
from service.services import Services

INTEROP_VERSION = "Upload-Draft-Interop-Version"
PARTIAL_UPLOAD = "application/partial-upload"
PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"
INCONSISTENT = "inconsistent length values for upload"
# What a browser may send and read, for the CORS settings (service/http/app.py).
REQUEST_HEADERS = [INTEROP_VERSION, "Upload-Complete", "Upload-Incomplete"]  # and tus's
EXPOSED_HEADERS = [INTEROP_VERSION, "Upload-Complete", "Upload-Incomplete", "Upload-Limit", "Accept-Patch"]


@dataclass(frozen=True)
class Draft:
    """What a server sees change from one interop version of the draft to the next."""

    interop_version: int
    completeness: str  # the header: Upload-Complete, or Upload-Incomplete (the opposite) before -02
    partial_upload_only: bool  # appends must be `Content-Type: application/partial-upload` (since -04)
    lifetime_limit: str | None  # Upload-Limit's key for the seconds an upload has left; None: no Upload-Limit

    def completeness_header(self, complete: bool) -> dict[str, str]:
        value = complete if self.completeness == "Upload-Complete" else not complete
        return {self.completeness: "?1" if value else "?0"}

    def says_complete(self, request: Request) -> bool | None:
        """The request's completeness: a structured-field boolean; any other value is ignored (None)."""
        value = request.headers.get(self.completeness, "").split(";")[0].strip()
        if value not in ("?1", "?0"):
            return None
        return (value == "?1") == (self.completeness == "Upload-Complete")


DRAFTS = {
    draft.interop_version: draft
    for draft in [
        Draft(3, "Upload-Incomplete", partial_upload_only=False, lifetime_limit=None),  # -01
        Draft(4, "Upload-Incomplete", partial_upload_only=False, lifetime_limit=None),  # -02
        Draft(5, "Upload-Complete", partial_upload_only=False, lifetime_limit=None),  # -03 (tus-js-client)
        Draft(6, "Upload-Complete", partial_upload_only=True, lifetime_limit="expires"),  # -04, -05 (tus-js-client)
        Draft(7, "Upload-Complete", partial_upload_only=True, lifetime_limit="max-age"),  # -06 to -08
        Draft(8, "Upload-Complete", partial_upload_only=True, lifetime_limit="max-age"),  # -09 to -11
    ]
}

Handler = Callable[[Request, Draft], Awaitable[Response]]


class DraftRoute(Route):
    """A route that takes only the requests in the draft: those with an `Upload-Draft-Interop-Version`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not any(name == b"upload-draft-interop-version" for name, _ in scope.get("headers", ())):
            return Match.NONE, {}
        return super().matches(scope)


class ResumableAPI:
    def __init__(self, services: Services) -> None:
        self.core = services.core
        self.auth = services.auth
        self.settings = services.settings

    def routes(self) -> list[Route]:
        return [
            DraftRoute("/tus/", self.answer(self.options), methods=["OPTIONS"]),
            DraftRoute("/tus/", self.answer(self.create), methods=["POST"]),
            DraftRoute("/tus/{upload_id}", self.answer(self.head), methods=["HEAD"]),
            DraftRoute("/tus/{upload_id}", self.answer(self.append), methods=["PATCH"]),
            DraftRoute("/tus/{upload_id}", self.answer(self.cancel), methods=["DELETE"]),
        ]

    async def options(self, request: Request, draft: Draft) -> Response:
        self.auth.authenticate(request.headers.get("authorization"))
        return Response(status_code=204, headers={"Accept-Patch": PARTIAL_UPLOAD} | self.limits(draft))

    async def create(self, request: Request, draft: Draft) -> Response:
        """Upload creation: a POST with the upload's completeness, and any of its bytes as the body."""
        principal = self.auth.authenticate(request.headers.get("authorization"))
        complete = _required_completeness(request, draft)
        content_length = header_int(request, "content-length")
        length = _length(request, complete, offset=0)
        metadata = parse_metadata(request.headers.get("upload-metadata"))
        upload = new_upload(metadata, length, self.settings, media_type=_representation_type(request))
        created = await self.core.create(upload, principal, requester(request))
        result: Session | Entry = created.session if created.file is None else created.file
        if created.file is None and (complete or content_length != 0):
            result = await self._append(created.session.id, principal, request, 0, complete, length)
        headers = {"Location": f"{base_url(self.settings, request)}/tus/{created.session.id}"}
        return Response(status_code=201, headers=headers | self._progress(draft, result) | self.limits(draft))

    async def head(self, request: Request, draft: Draft) -> Response:
        """Offset retrieval, also after completion (for a client that missed the completing answer)."""
        principal = self.auth.authenticate(request.headers.get("authorization"))
        session = await self.core.status(request.path_params["upload_id"], principal, "write")
        headers = {"Upload-Offset": str(session.offset), "Cache-Control": "no-store"}
        headers |= draft.completeness_header(session.completed)
        if not session.length_deferred:
            headers["Upload-Length"] = str(session.size)
        return Response(status_code=204, headers=headers | self.limits(draft))

    async def append(self, request: Request, draft: Draft) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if draft.partial_upload_only and media_type != PARTIAL_UPLOAD:
            detail = f"an append must have Content-Type: {PARTIAL_UPLOAD}"
            return _problem(415, "Unsupported Media Type", detail, {"Accept-Patch": PARTIAL_UPLOAD})
        complete = _required_completeness(request, draft)
        offset = header_int(request, "upload-offset")
        if offset is None:
            raise InvalidRequest("an append must say where its bytes start in Upload-Offset")
        length = _length(request, complete, offset)
        upload_id = request.path_params["upload_id"]
        try:
            result: Session | Entry = await self._append(upload_id, principal, request, offset, complete, length)
        except SessionCompleted:
            # The core commits an upload when its last byte is in, also from a request that said
            # `Upload-Complete: ?0`: the client's empty `?1` at that length, which follows, finds it so.
            session = await self.core.status(upload_id, principal, "write")
            if not (complete and header_int(request, "content-length") == 0 and offset == session.offset):
                raise
            result = session
        return Response(status_code=204, headers=self._progress(draft, result))

    async def cancel(self, request: Request, draft: Draft) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        await self.core.cancel(request.path_params["upload_id"], principal)
        return Response(status_code=204)

    async def _append(
        self, session_id: str, principal: Principal, request: Request, offset: int, complete: bool, length: int | None
    ) -> Session | Entry:
        """Write the body at `offset`; with `complete`, the upload ends with it (the core commits it).

        A completing body of no declared length (chunked) ends the upload where it ends: the length
        is declared after it, by an empty write (a process that dies between the two leaves the
        bytes in and the upload incomplete: the client's next append, empty, completes it).
        """
        try:
            result = await self.core.write(
                session_id,
                principal,
                request_body(request),
                upload_offset=offset,
                content_length=header_int(request, "content-length"),
                size=length,
            )
        except UploadRestarted:
            # The draft's offset never decreases: the upload ends rather than restart at 0 (see `problem`).
            await self.core.cancel(session_id, principal)
            raise
        except UploadTooLarge:
            session = await self.core.status(session_id, principal, "write")
            if session.length_deferred:
                raise  # over the service's limit, which Upload-Limit announces: 413
            # Past a length the upload has: the draft makes the upload invalid, any later request refused.
            await self.core.cancel(session_id, principal)
            raise InconsistentLength(
                f"the request ran past the upload's length of {session.size} bytes; the upload is ended "
                "and nothing of this request was kept: create a new upload"
            ) from None
        if not complete or isinstance(result, Entry):
            return result
        if not result.length_deferred:
            raise InconsistentLength(
                f"the upload was marked complete at offset {result.offset}, but its length is {result.size}",
                offset=result.offset,
            )
        return await self.core.write(
            session_id, principal, empty_body(), upload_offset=result.offset, content_length=0, size=result.offset
        )

    def limits(self, draft: Draft) -> dict[str, str]:
        """Upload-Limit (since -04): the largest upload, and the seconds an upload is kept from now on
        (each request renews a session's time to live)."""
        if draft.lifetime_limit is None:
            return {}
        limits = f"max-size={self.core.max_upload_bytes}, {draft.lifetime_limit}={self.settings.session_ttl_seconds}"
        return {"Upload-Limit": limits}

    def _progress(self, draft: Draft, result: Session | Entry) -> dict[str, str]:
        if isinstance(result, Entry):
            return {"Upload-Offset": str(result.bytes)} | draft.completeness_header(True)
        return {"Upload-Offset": str(result.offset)} | draft.completeness_header(result.completed)

    def answer(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """The handler for a request in one of the `DRAFTS`, with the core's errors as problem details."""

        async def endpoint(request: Request) -> Response:
            version = request.headers[INTEROP_VERSION].strip()
            draft = DRAFTS.get(int(version)) if version.isascii() and version.isdigit() and len(version) < 4 else None
            if draft is None:
                served = ", ".join(str(number) for number in DRAFTS)
                return _problem(400, "Bad Request", f"{INTEROP_VERSION} {version[:20]!r} is not served: {served} are")
            try:
                response = await handler(request, draft)
            except FilesError as error:
                response = self.problem(request, draft, error)
            response.headers[INTEROP_VERSION] = str(draft.interop_version)
            return response

        endpoint.__name__ = endpoint.__qualname__ = f"draft_{handler.__name__}"
        return endpoint

    def problem(self, request: Request, draft: Draft, error: FilesError) -> Response:
        """An error as RFC 9457 problem details: the draft's problem types where it names one, else
        `about:blank` with the status the seed's API gives it (and its code and fields, as there)."""
        if isinstance(error, UploadRestarted):  # ended, not restarted at 0 (`_append`): no offset to report
            detail = "the partial data of this upload was lost, and the upload with it: create a new upload"
            return _problem(404, _phrase(404), detail, code=SessionNotFound.code)
        status = status_of(error)
        headers = error_headers(error)
        members: dict[str, object] = {"code": error.code, **error.fields}
        kind, title = "about:blank", _phrase(status)
        if isinstance(error, OffsetMismatch):
            kind, title = (
                f"{PROBLEM_TYPES}mismatching-upload-offset",
                "offset from request does not match offset of resource",
            )
            members |= {"expected-offset": error.fields["offset"], "provided-offset": _provided_offset(request)}
        elif isinstance(error, SessionCompleted) and _appends_bytes(request):
            # Bytes for an upload that is complete: the draft names that an inconsistent length.
            status, kind, title = 400, f"{PROBLEM_TYPES}inconsistent-upload-length", INCONSISTENT
        elif isinstance(error, SessionCompleted):
            status, kind, title = 400, f"{PROBLEM_TYPES}completed-upload", "upload is already completed"
        elif isinstance(error, InconsistentLength):
            kind, title = f"{PROBLEM_TYPES}inconsistent-upload-length", INCONSISTENT
        elif isinstance(error, UploadTooLarge):
            headers |= self.limits(draft)
        return _problem(status, title, error.detail, headers, kind, **members)


def _required_completeness(request: Request, draft: Draft) -> bool:
    complete = draft.says_complete(request)
    if complete is None:
        raise InvalidRequest(f"the request must say whether it completes the upload in {draft.completeness}: ?1 or ?0")
    return complete


def _length(request: Request, complete: bool, offset: int) -> int | None:
    """The upload's length as the request gives it: Upload-Length, or, in a completing request, where
    its body ends (offset + Content-Length); both must agree. None: not known yet."""
    length = _structured_integer(request.headers.get("upload-length"))
    content_length = header_int(request, "content-length")
    if complete and content_length is not None:
        if length is not None and length != offset + content_length:
            raise InconsistentLength(
                f"Upload-Length is {length}, but this completing request ends the upload at {offset + content_length}"
            )
        return offset + content_length
    return length


def _structured_integer(value: str | None) -> int | None:
    """A Structured Field Integer of at most 15 digits (its parameters ignored), or None for any other
    value: the draft says an invalid `Upload-Length` is ignored, as if absent."""
    number = (value or "").split(";")[0].strip()
    return int(number) if number.isascii() and number.isdigit() and len(number) <= 15 else None


def _representation_type(request: Request) -> str | None:
    """The media type of the upload as its creation request gives it: that request's body is the
    representation's first bytes, so its `Content-Type` is the representation's (not the draft's own
    type for appends, nor tus's)."""
    media_type = request.headers.get("content-type", "").strip()
    if media_type.split(";")[0].strip().lower() in ("", PARTIAL_UPLOAD, CHUNK_TYPE):
        return None
    return media_type


def _appends_bytes(request: Request) -> bool:
    """Whether the request has a body of some bytes (one sent chunked may have)."""
    length = request.headers.get("content-length")
    if length is None:
        return "transfer-encoding" in request.headers
    return length.strip() not in ("0", "")


def _provided_offset(request: Request) -> int | None:
    raw = request.headers.get("upload-offset", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 20 else None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _problem(
    status: int,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    kind: str = "about:blank",
    **members: object,
) -> Response:
    body = {"type": kind, "title": title, "status": status, "detail": detail, **members}
    return Response(json.dumps(body), status_code=status, headers=headers, media_type="application/problem+json")
