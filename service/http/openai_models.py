"""The JSON shapes of OpenAI's Files and Uploads API, as pydantic models: the OpenAI fronts answer with
these and /openapi.json describes them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Purpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]


class OpenAIFile(BaseModel):
    """A file: the entry of key `id` in the bucket FILES_OPENAI_BUCKET."""

    id: str = Field(description="'file-' + the creation time in ms (12 hex digits) + 16 random hex digits.")
    object: Literal["file"] = "file"
    bytes: int
    created_at: int = Field(description="Unix seconds.")
    expires_at: int | None = Field(description="Unix seconds; null when the file does not expire.")
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    status_details: None = None


class OpenAIFileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIFile]
    first_id: str | None
    last_id: str | None
    has_more: bool


class OpenAIFileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: Literal[True] = True


class CreateUploadBody(BaseModel):
    """Body of `POST /uploads`."""

    bytes: int = Field(ge=0, description="The file's size.")
    filename: str = Field(min_length=1, max_length=1024)
    mime_type: str
    purpose: Purpose


class CompleteUploadBody(BaseModel):
    """Body of `POST /uploads/<id>/complete`."""

    part_ids: list[str] = Field(min_length=1, description="The parts, in the order of the file's content.")
    md5: str | None = Field(default=None, description="The MD5 of the whole content, hex: checked.")


class OpenAIUpload(BaseModel):
    id: str = Field(description="'upload_' + 32 hex digits.")
    object: Literal["upload"] = "upload"
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    file: OpenAIFile | None


class OpenAIUploadPart(BaseModel):
    id: str = Field(description="'part_' + 32 hex digits.")
    object: Literal["upload.part"] = "upload.part"
    created_at: int
    upload_id: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="'invalid_request_error' below 500, 'server_error' from 500 on.")
    param: str | None = Field(description="The field at fault, when there is one.")
    code: str = Field(description="The service's error code.")


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail
