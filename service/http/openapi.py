"""/openapi.json, generated from the pydantic models the routes use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.http.models import (
    BucketList,
    CompletedUploadResponse,
    CopyRequest,
    CreateUploadRequest,
    ErrorResponse,
    FileList,
    FileResponse,
    FileUploadResponse,
    TokenInfo,
)
from service.http.openai_models import (
    CompleteUploadBody,
    CreateUploadBody,
    OpenAIError,
    OpenAIFile,
    OpenAIFileDeleted,
    OpenAIFileList,
    OpenAIUpload,
    OpenAIUploadPart,
)

REF = "#/components/schemas/{model}"
# The contract's name rules as JSON Schema patterns. A key segment is anything of the key
# characters but '.' and '..': it holds a character other than '.', or is three dots or more.
BUCKET_PATTERN = "^[a-zA-Z0-9_-]{1,63}$"
_SEGMENT = r"(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9_-][a-zA-Z0-9_.-]*|\.{3,})"
KEY_PATTERN = rf"^{_SEGMENT}(?:/{_SEGMENT})*$"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
MEDIA_TYPE_PATTERN = rf'^{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"(?:[^"\\\x00-\x1f\x7f]|\\.)*"))*$'
DIGEST_PATTERN = "^(?:blake3|sha256):[0-9a-fA-F]{64}$"
BUCKET_DESCRIPTION = "The bucket: 1 to 63 characters of a-zA-Z0-9_- (no '.')."
KEY_DESCRIPTION = (
    "The file's key, 1 to 1024 characters of a-zA-Z0-9_-/.: segments separated by '/', none empty, '.' or '..'."
)
# The one security scheme; an operation that may answer 401 requires it, the others are open.
BEARER = "bearer"
SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "A token from `files-service token new`, when FILES_AUTH_TOKENS_FILE is set.",
    }
}
MODELS: list[type[BaseModel]] = [
    CreateUploadRequest,
    CopyRequest,
    FileUploadResponse,
    FileResponse,
    CompletedUploadResponse,
    BucketList,
    FileList,
    ErrorResponse,
    TokenInfo,
    OpenAIFile,
    OpenAIFileList,
    OpenAIFileDeleted,
    OpenAIUpload,
    OpenAIUploadPart,
    OpenAIError,
    CreateUploadBody,
    CompleteUploadBody,
]
OPENAI = "/v1/openai/v1"
ERRORS = {
    400: "A name, field, header or query value breaks the rules.",
    401: "Access control is on and the request has no valid bearer token.",
    403: "The token lacks the action or the bucket.",
    404: "No such session or file.",
    408: "The client sent nothing for too long; what arrived before is kept.",
    409: "Offset conflict, another writer holds the session, or the session has completed.",
    413: "Over the size limit, or a chunk that runs past the session's size.",
    416: "The range cannot be satisfied.",
    422: "The content does not match the expected digest.",
    429: "The token (or client address) has as many open upload sessions as it may.",
    503: "Redis or the data directory is unavailable.",
    507: "The data volume is full.",
}
# The errors of /tus/ besides: tus's (in text), and those both protocols give a chunk.
UPLOAD_PROTOCOL_ERRORS = ERRORS | {
    409: "Upload-Offset is not the upload's offset (the draft: a mismatching-upload-offset problem), "
    "or another request is writing to the upload.",
    412: "tus: Tus-Resumable is not 1.0.0 (and no Upload-Draft-Interop-Version makes the request the draft's).",
    415: "The chunk's Content-Type is not application/offset+octet-stream (tus) or application/partial-upload "
    "(the draft, from interop version 6).",
    460: "tus: the chunk does not match its Upload-Checksum; nothing of it was kept.",
}
PROBLEM_DETAILS = {
    "type": "object",
    "description": "RFC 9457 problem details, the errors of the IETF draft (the draft's problem types "
    "where it names one, with expected-offset and provided-offset on a mismatching offset).",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "expected-offset": {"type": "integer"},
        "provided-offset": {"type": ["integer", "null"]},
    },
    "required": ["type", "title", "status", "detail"],
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: list[int],
    parameters: Sequence[dict[str, Any]] = (),
    body: dict[str, Any] | None = None,
    error_model: type[BaseModel] = ErrorResponse,
) -> dict[str, Any]:
    responses: dict[str, Any] = {str(status): response for status, response in ok.items()}
    for status in errors:
        responses[str(status)] = _json(_ref(error_model), ERRORS[status])
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if 401 in errors:
        operation["security"] = [{BEARER: []}]
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = body
    return operation


def _path(name: str, description: str, pattern: str | None = None, example: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    parameter = {"name": name, "in": "path", "required": True, "description": description, "schema": schema}
    if example is not None:
        parameter["example"] = example
    return parameter


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


def _upload_protocol_operation(
    summary: str,
    ok: dict[int, dict[str, Any]],
    errors: list[int],
    parameters: Sequence[dict[str, Any]],
    body: bool = False,
) -> dict[str, Any]:
    """An operation of /tus/, where tus and the IETF draft share each method (told apart by
    Upload-Draft-Interop-Version): tus errors are JSON (or text), the draft's problem details."""
    operation = _operation(summary, ok, [], parameters)
    for status in errors:
        content: dict[str, Any] = {
            "application/json": {"schema": _ref(ErrorResponse)},
            "application/problem+json": {"schema": {"$ref": REF.format(model="ProblemDetails")}},
        }
        if status in (412, 415):
            content["text/plain"] = {"schema": {"type": "string"}}
        operation["responses"][str(status)] = {"description": UPLOAD_PROTOCOL_ERRORS[status], "content": content}
    operation["security"] = [{BEARER: []}]
    if body:
        binary = {"schema": {"type": "string", "format": "binary"}}
        operation["requestBody"] = {
            "required": False,
            "content": {"application/offset+octet-stream": binary, "application/partial-upload": binary},
        }
    return operation


def upload_protocol_paths() -> dict[str, Any]:
    """/tus/: tus 1.0.0 and the IETF draft "Resumable Uploads for HTTP" (docs/api.md has the whole of both)."""
    upload_id = _path("upload_id", "The upload's id, from Location; also its session id.", "^[0-9a-f]{32}$")
    tus = _header("Tus-Resumable", {"type": "string", "enum": ["1.0.0"]}, "tus: required but on OPTIONS.")
    draft = _header(
        "Upload-Draft-Interop-Version",
        {"type": "string", "enum": ["3", "4", "5", "6", "7", "8"]},
        "The IETF draft's interop version (8: draft -11): a request with it is the draft's, one without tus's.",
    )
    complete = _header(
        "Upload-Complete", {"type": "string", "enum": ["?0", "?1"]}, "The draft: ?1 when this request ends the upload."
    )
    length = _header("Upload-Length", {"type": "integer", "minimum": 0}, "The upload's length in bytes.")
    offset = _header("Upload-Offset", {"type": "integer", "minimum": 0}, "Where this chunk starts.")
    checksum = _header("Upload-Checksum", {"type": "string"}, "tus: '<sha1|sha256|md5> <base64 digest>' of the chunk.")
    text = {"schema": {"type": "string"}}
    headers = {
        name: text
        for name in ("Location", "Upload-Offset", "Upload-Expires", "Upload-Complete", "Upload-Limit", "Tus-Resumable")
    }
    return {
        "/tus/": {
            "options": _upload_protocol_operation(
                "tus: the version, extensions and limits; the draft (with its interop version): Accept-Patch and "
                "Upload-Limit.",
                {204: {"description": "What is served.", "headers": headers}},
                [400, 401],
                [draft],
            ),
            "post": _upload_protocol_operation(
                "Create an upload (tus: creation; the draft: upload creation), with its first bytes as the body.",
                {201: {"description": "Created: Location is the upload's URL.", "headers": headers}},
                [400, 401, 403, 404, 408, 409, 412, 413, 415, 429, 460, 503, 507],
                [
                    tus,
                    draft,
                    length,
                    _header("Upload-Defer-Length", {"type": "string", "enum": ["1"]}, "tus: the length comes later."),
                    _header(
                        "Upload-Metadata",
                        {"type": "string"},
                        "Pairs of a name and a base64 value: bucket, key, "
                        "filetype, filename and any other, kept as the file's metadata.",
                    ),
                    checksum,
                    _header(
                        "Upload-Concat",
                        {"type": "string"},
                        "tus: 'partial', or 'final;' and the URLs of the partial uploads to concatenate.",
                    ),
                    complete,
                ],
                body=True,
            ),
        },
        "/tus/{upload_id}": {
            "head": _upload_protocol_operation(
                "The upload's offset (and length, once known), also after completion.",
                {
                    200: {"description": "tus: the offset.", "headers": headers},
                    204: {"description": "The draft: the offset and completeness.", "headers": headers},
                },
                [400, 401, 403, 404, 412, 503],
                [upload_id, tus, draft],
            ),
            "patch": _upload_protocol_operation(
                "Append a chunk at Upload-Offset (the draft: with Upload-Complete: ?1 the last).",
                {204: {"description": "Appended: the new Upload-Offset.", "headers": headers}},
                [400, 401, 403, 404, 408, 409, 412, 413, 415, 460, 503, 507],
                [upload_id, tus, draft, offset, length, checksum, complete],
                body=True,
            ),
            "delete": _upload_protocol_operation(
                "Cancel the upload (tus: termination) and remove its partial data.",
                {204: {"description": "Cancelled."}},
                [400, 401, 403, 404, 409, 412, 503],
                [upload_id, tus, draft],
            ),
        },
    }


def _named(model: type[BaseModel]) -> dict[str, Any]:
    """The schema of a request body that names a bucket and key, with the name rules as patterns."""
    schema = model.model_json_schema(ref_template=REF)
    fields = schema["properties"]
    fields["bucket"] |= {"pattern": BUCKET_PATTERN, "minLength": 1, "maxLength": 63, "description": BUCKET_DESCRIPTION}
    fields["key"] |= {"pattern": KEY_PATTERN, "minLength": 1, "maxLength": 1024, "description": KEY_DESCRIPTION}
    return schema


def build_openapi() -> dict[str, Any]:
    _, definitions = models_json_schema([(model, "serialization") for model in MODELS], ref_template=REF)
    request_schema, copy_schema = (_named(model) for model in (CreateUploadRequest, CopyRequest))
    fields = request_schema["properties"]
    fields["mime_type"] |= {"pattern": MEDIA_TYPE_PATTERN}
    for choice in fields["digest"]["anyOf"]:
        if choice.get("type") == "string":
            choice["pattern"] = DIGEST_PATTERN
    schemas = definitions["$defs"] | {
        "CreateUploadRequest": request_schema,
        "CopyRequest": copy_schema,
        "ProblemDetails": PROBLEM_DETAILS,
    }
    session = _path("session_id", "The session id from POST /v1/files.", "^[0-9a-f]{32}$")
    bucket = _path("bucket", BUCKET_DESCRIPTION, BUCKET_PATTERN, "photos")
    key = _path("key", KEY_DESCRIPTION, KEY_PATTERN, "2024/cat.jpg")
    key["schema"] |= {"minLength": 1, "maxLength": 1024}
    upload = _json(_ref(FileUploadResponse), "The session and its offset.")
    file = _json(_ref(FileResponse), "The file.")
    either = _json({"oneOf": [_ref(FileUploadResponse), _ref(FileResponse)]}, "The session, or the file once complete.")
    # anyOf, not oneOf: a CompletedUploadResponse carries every field of a FileUploadResponse too.
    created = _json(
        {"anyOf": [_ref(FileUploadResponse), _ref(CompletedUploadResponse)]},
        "The new session; or the file, when the session completed at once: of size 0, or deduplicated "
        "(its blake3 digest names content stored already in a bucket the token may read).",
    )
    content_headers = {
        name: {"schema": {"type": "string"}} for name in ("ETag", "Accept-Ranges", "Content-Length", "Content-Type")
    }
    ranged = {
        "description": "The requested range.",
        "headers": content_headers | {"Content-Range": {"schema": {"type": "string"}}},
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
    whole = {
        "description": "The content, streamed; Content-Type is the file's mime_type.",
        "headers": content_headers,
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    }
    plain = {"description": "Status.", "content": {"application/json": {"schema": {"type": "object"}}}}
    download_parameters = [
        bucket,
        key,
        _header("Range", {"type": "string"}, "One byte range: bytes=a-b, bytes=a- or bytes=-n.")
        | {"example": "bytes=0-99"},
        _header("If-None-Match", {"type": "string"}, "The ETag held: 304 when it is current."),
        _header("If-Range", {"type": "string"}, "The ETag held: Range applies only while it is current."),
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "files-service",
            "version": "1",
            "description": "Resumable uploads into a deduplicating content-addressed store.",
        },
        "paths": {
            "/healthz": {"get": _operation("The process is running.", {200: plain}, [])},
            "/openapi.json": {
                "get": _operation(
                    "This document.",
                    {
                        200: {
                            "description": "OpenAPI 3.1.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                    [],
                )
            },
            "/": {
                "get": _operation(
                    "The web console: browse, upload and manage files in a browser; it asks for the token itself.",
                    {200: {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
                    [],
                )
            },
            "/docs": {
                "get": _operation(
                    "Interactive API docs (Swagger UI) on this document; its Authorize button takes the token.",
                    {200: {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}},
                    [],
                )
            },
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics (text exposition format); with tokens on, any valid token may scrape.",
                    {200: {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                    [401],
                )
            },
            "/readyz": {
                "get": _operation(
                    "Redis answers and the data directory is writable.",
                    {200: plain, 503: _json(_ref(ErrorResponse), "Not ready.")},
                    [],
                )
            },
            "/v1/token": {
                "get": _operation(
                    "What the calling token may do, per bucket.", {200: _json(_ref(TokenInfo), "The token.")}, [401]
                )
            },
            "/v1/files": {
                "post": _operation(
                    "Start an upload session.",
                    {200: created},
                    # 422: a session of size 0 completes at once, checked against its digest.
                    [400, 401, 403, 413, 422, 429, 503, 507],
                    body={"required": True, "content": {"application/json": {"schema": _ref(CreateUploadRequest)}}},
                ),
                "get": _operation(
                    "List the buckets that hold at least one file.",
                    {200: _json(_ref(BucketList), "Buckets.")},
                    [401, 503],
                ),
            },
            "/v1/files/session:{session_id}": {
                "post": _operation(
                    "Upload the next chunk (or all) of the content.",
                    {200: either},
                    [400, 401, 403, 404, 408, 409, 413, 422, 503, 507],
                    parameters=[
                        session,
                        _header("Upload-Offset", {"type": "integer", "minimum": 0}, "Where this chunk starts."),
                    ],
                    body={
                        "required": False,
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                ),
                "get": _operation(
                    "The session and its offset.", {200: upload}, [401, 403, 404, 503], parameters=[session]
                ),
                "delete": _operation(
                    "Cancel the session and remove its partial data.",
                    {204: {"description": "Cancelled."}},
                    [401, 403, 404, 409, 503],
                    parameters=[session],
                ),
            },
            "/v1/files/{bucket}": {
                "get": _operation(
                    "List files in key order, a page at a time.",
                    {200: _json(_ref(FileList), "A page of files.")},
                    [400, 401, 403, 503],
                    parameters=[
                        bucket,
                        _query("prefix", {"type": "string"}, "Only keys that start with this."),
                        _query("after", {"type": "string"}, "Only keys sorted after this one."),
                        _query(
                            "limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}, "Page size."
                        ),
                    ],
                )
            },
            "/v1/files/{bucket}/{key}": {
                "get": _operation("File info.", {200: file}, [400, 401, 403, 404], parameters=[bucket, key]),
                "delete": _operation(
                    "Delete the file.", {200: file}, [400, 401, 403, 404, 503], parameters=[bucket, key]
                ),
            },
            "/v1/files/{bucket}/{key}:copy": {
                "post": _operation(
                    "Copy the file to another bucket/key without reading or writing its content again (the same "
                    "blob); needs read on the source's bucket and write on the target's.",
                    {200: _json(_ref(FileResponse), "The new file.")},
                    [400, 401, 403, 404, 413, 503, 507],
                    parameters=[bucket, key],
                    body={"required": True, "content": {"application/json": {"schema": _ref(CopyRequest)}}},
                )
            },
            "/v1/files/{bucket}/{key}:content": {
                "get": _operation(
                    "Download the content.",
                    {
                        200: whole,
                        206: ranged,
                        304: {"description": "Not modified."},
                        307: {
                            "description": "With FILES_S3_PRESIGNED_DOWNLOADS: the content is at the short-lived "
                            "presigned URL of the object store in `Location` (Range works there too).",
                            "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}},
                        },
                    },
                    [400, 401, 403, 404, 416, 503],
                    parameters=download_parameters,
                ),
                "head": _operation(
                    "The download's headers, without the content.",
                    {
                        200: {"description": "Headers only.", "headers": content_headers},
                        206: {"description": "Headers only."},
                        304: {"description": "Not modified."},
                    },
                    [400, 401, 403, 404, 416],
                    parameters=download_parameters,
                ),
            },
        }
        | upload_protocol_paths()
        | _openai_paths(whole, ranged, content_headers),
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }


def _openai_paths(whole: dict[str, Any], ranged: dict[str, Any], content_headers: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's Files and Uploads (service/http/openai.py, openai_uploads.py): errors in OpenAI's shape."""
    file_id = _path("file_id", "The file's id, 'file-...'.")
    upload_id = _path("upload_id", "The upload's id, 'upload_...'.")
    file = _json(_ref(OpenAIFile), "The file.")
    upload = _json(_ref(OpenAIUpload), "The upload.")

    def operation(summary: str, ok: dict[int, dict[str, Any]], errors: list[int], **extra: Any) -> dict[str, Any]:
        return _operation(summary, ok, errors, error_model=OpenAIError, **extra)

    def form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        schema = {"type": "object", "properties": properties, "required": required}
        return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}

    def json_body(model: type[BaseModel]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}

    binary = {"type": "string", "format": "binary"}
    purpose = {"type": "string", "enum": ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]}
    content_parameters = [
        file_id,
        _header("Range", {"type": "string"}, "One byte range: bytes=a-b, bytes=a- or bytes=-n."),
        _header("If-None-Match", {"type": "string"}, "The ETag held: 304 when it is current."),
        _header("If-Range", {"type": "string"}, "The ETag held: Range applies only while it is current."),
    ]
    return {
        f"{OPENAI}/files": {
            "post": operation(
                "OpenAI: upload a file (multipart; `purpose` and `expires_after[...]` before `file`, which streams).",
                {200: file},
                [400, 401, 403, 408, 413, 429, 503, 507],
                body=form(
                    {
                        "purpose": purpose,
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {"type": "integer", "minimum": 0},
                        "file": binary,
                    },
                    ["purpose", "file"],
                ),
            ),
            "get": operation(
                "OpenAI: list files by created_at, then id.",
                {200: _json(_ref(OpenAIFileList), "A page of files.")},
                [400, 401, 403, 503],
                parameters=[
                    _query("after", {"type": "string"}, "A file id: the page starts after it, in this order."),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10000}, "Size."),
                    _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "desc"}, "Order."),
                    _query("purpose", {"type": "string"}, "Only files of this purpose."),
                ],
            ),
        },
        f"{OPENAI}/files/{{file_id}}": {
            "get": operation("OpenAI: a file.", {200: file}, [401, 403, 404, 503], parameters=[file_id]),
            "delete": operation(
                "OpenAI: delete a file.",
                {200: _json(_ref(OpenAIFileDeleted), "Deleted.")},
                [401, 403, 404, 503],
                parameters=[file_id],
            ),
        },
        f"{OPENAI}/files/{{file_id}}/content": {
            "get": operation(
                "OpenAI: a file's content.",
                {200: whole, 206: ranged, 304: {"description": "Not modified."}},
                [401, 403, 404, 416, 503],
                parameters=content_parameters,
            ),
            "head": operation(
                "OpenAI: a file's content headers.",
                {
                    200: {"description": "Headers only.", "headers": content_headers},
                    206: {"description": "Headers only."},
                    304: {"description": "Not modified."},
                },
                [401, 403, 404, 416, 503],
                parameters=content_parameters,
            ),
        },
        f"{OPENAI}/uploads": {
            "post": operation(
                "OpenAI: start an upload of parts.",
                {200: upload},
                [400, 401, 403, 413, 503],
                body=json_body(CreateUploadBody),
            )
        },
        f"{OPENAI}/uploads/{{upload_id}}/parts": {
            "post": operation(
                "OpenAI: add a part (multipart `data`, at most 64 MiB); parts may arrive in parallel.",
                {200: _json(_ref(OpenAIUploadPart), "The part.")},
                [400, 401, 403, 404, 408, 413, 429, 503, 507],
                parameters=[upload_id],
                body=form({"data": binary}, ["data"]),
            )
        },
        f"{OPENAI}/uploads/{{upload_id}}/complete": {
            "post": operation(
                "OpenAI: the file of the parts named, in order, the md5 checked; a refusal consumes nothing.",
                {200: upload},
                [400, 401, 403, 404, 413, 429, 503, 507],
                parameters=[upload_id],
                body=json_body(CompleteUploadBody),
            )
        },
        f"{OPENAI}/uploads/{{upload_id}}/cancel": {
            "post": operation(
                "OpenAI: cancel an upload; its parts are dropped (409 while a completion holds them).",
                {200: upload},
                [400, 401, 403, 404, 409, 503],
                parameters=[upload_id],
            )
        },
    }
