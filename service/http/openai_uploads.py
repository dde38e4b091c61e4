"""OpenAI's Uploads API at /v1/openai/v1: a file sent as parts, completed from the parts named in order.

An upload (`upload_<id>`) is a parted upload of the core (`service.core.parted`) whose file will be
an OpenAI file (`file-...`, its key fixed at the start, so it sorts by when the upload began);
a part (`part_<id>`) is a part session. Errors become OpenAI's error objects in `openai.answer`.
"""

from __future__ import annotations

import json
import time
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.core.errors import InvalidRequest, UploadNotFound
from service.core.model import Entry, PartedUpload
from service.http.multipart import FormReader
from service.http.openai import PREFIX, answer, file_object, new_file_id
from service.http.openai_models import CompleteUploadBody, CreateUploadBody, OpenAIUpload, OpenAIUploadPart
from service.http.routes import describe, json_response, read_limited, request_body
from service.services import Services

UPLOAD_PREFIX, PART_PREFIX = "upload_", "part_"


def upload_object(upload: PartedUpload, entry: Entry | None = None) -> OpenAIUpload:
    return OpenAIUpload(
        id=f"{UPLOAD_PREFIX}{upload.id}",
        bytes=upload.size,
        created_at=upload.created_at,
        expires_at=upload.expires_at,
        filename=upload.metadata.get("filename", upload.key),
        purpose=upload.metadata.get("purpose", "user_data"),
        status=upload.status,  # type: ignore[arg-type]
        file=file_object(entry) if entry is not None else None,
    )


class OpenAIUploadsAPI:
    def __init__(self, services: Services) -> None:
        self.parted = services.parted
        self.auth = services.auth
        self.bucket = services.settings.openai_bucket
        self.max_json_bytes = services.settings.max_json_bytes

    def routes(self) -> list[Route]:
        return [
            Route(f"{PREFIX}/uploads", answer(self.create_upload), methods=["POST"]),
            Route(f"{PREFIX}/uploads/{{upload_id}}/parts", answer(self.add_part), methods=["POST"]),
            Route(f"{PREFIX}/uploads/{{upload_id}}/complete", answer(self.complete), methods=["POST"]),
            Route(f"{PREFIX}/uploads/{{upload_id}}/cancel", answer(self.cancel), methods=["POST"]),
        ]

    async def create_upload(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, CreateUploadBody, self.max_json_bytes)
        upload = await self.parted.create(
            self.bucket,
            new_file_id(time.time()),
            body.mime_type,
            body.bytes,
            {"filename": body.filename, "purpose": body.purpose},
            principal,
        )
        return json_response(upload_object(upload))

    async def add_part(self, request: Request) -> Response:
        """Multipart `data`: its content streams into a part session; the part's length is where it ends."""
        principal = self.auth.authenticate(request.headers.get("authorization"))
        upload = await self.parted.get(_upload_id(request), principal)  # before the body
        form = FormReader(request.headers.get("content-type", ""), request_body(request))
        part = None
        while (field := await form.next_part()) is not None:
            if field.name != "data":
                continue  # read past: the form must still end well
            if part is not None:
                raise InvalidRequest("the form has more than one 'data'", param="data")
            requester = request.client.host if request.client else "unknown"
            part = await self.parted.add_part(upload.id, principal, form.content(), requester)
        if part is None:
            raise InvalidRequest("the form has no 'data'", param="data")
        return json_response(
            OpenAIUploadPart(
                id=f"{PART_PREFIX}{part.id}", created_at=part.created_at, upload_id=f"{UPLOAD_PREFIX}{upload.id}"
            )
        )

    async def complete(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        body = await _json_body(request, CompleteUploadBody, self.max_json_bytes)
        part_ids = [part_id.removeprefix(PART_PREFIX) for part_id in body.part_ids]
        requester = request.client.host if request.client else "unknown"
        upload, entry = await self.parted.complete(_upload_id(request), part_ids, principal, requester, md5=body.md5)
        return json_response(upload_object(upload, entry))

    async def cancel(self, request: Request) -> Response:
        principal = self.auth.authenticate(request.headers.get("authorization"))
        return json_response(upload_object(await self.parted.cancel(_upload_id(request), principal)))


def _upload_id(request: Request) -> str:
    upload_id: str = request.path_params["upload_id"]
    if not upload_id.startswith(UPLOAD_PREFIX):
        raise UploadNotFound()
    return upload_id.removeprefix(UPLOAD_PREFIX)


Body = TypeVar("Body", bound=BaseModel)


async def _json_body(request: Request, model: type[Body], limit: int) -> Body:
    body = await read_limited(request, limit)
    try:
        return model.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidRequest(f"the body is not valid JSON: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]["loc"]
        raise InvalidRequest(describe(error), param=str(first[0]) if first else None) from None
