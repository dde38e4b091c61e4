"""The JSON shapes of the API, as pydantic models: the routes and /openapi.json both use these."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from service.core import names
from service.core.auth import Action

T = TypeVar("T")


def _check(error: str | None, value: T) -> T:
    if error is not None:
        raise ValueError(error)
    return value


class FileName(BaseModel):
    """A bucket and key in a request body, checked against the contract's name rules."""

    bucket: StrictStr
    key: StrictStr

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        return _check(names.bucket_error(value), value)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _check(names.key_error(value), value)


METADATA_DESCRIPTION = (
    "Name/value pairs kept with the file: at most 32, names of 1 to 64 characters of a-zA-Z0-9_-, "
    "values of at most 1024 characters."
)


class CreateUploadRequest(FileName):
    """Body of `POST /v1/files`."""

    mime_type: StrictStr
    size: StrictInt = Field(ge=0, description="Total number of bytes of the file.")
    digest: StrictStr | None = Field(
        default=None,
        description="Expected digest of the whole content: 'blake3:<hex>' or 'sha256:<hex>'. A 'blake3:' digest of "
        "content stored already in a bucket the token may read completes the upload at once (deduplicated).",
    )
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, description=METADATA_DESCRIPTION)

    @field_validator("mime_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        return _check(names.mime_type_error(value), value)

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check(names.digest_error(value), value).lower()

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        return _check(names.metadata_error(value), value)


class CopyRequest(FileName):
    """Body of `POST /v1/files/<bucket>/<key>:copy`: the new file's bucket and key."""

    metadata: dict[StrictStr, StrictStr] | None = Field(
        default=None,
        description="Replaces the source's metadata; absent or null: the source's. " + METADATA_DESCRIPTION,
    )

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return value if value is None else _check(names.metadata_error(value), value)


class FileUploadResponse(BaseModel):
    """An upload session and how far it has got."""

    id: str
    url: str = Field(description="Where to POST the content: <base>/v1/files/session:<id>.")
    offset: int = Field(description="Bytes received and kept so far; the next chunk starts here.")
    size: int | None = Field(description="The file's size; null while a tus upload defers its length.")


class FileResponse(BaseModel):
    """A stored file."""

    bucket: str
    key: str
    mime_type: str
    url: str = Field(description="Where to GET the content: <base>/v1/files/<bucket>/<key>:content.")
    bytes: int
    created_at: int = Field(description="Unix seconds.")
    digest: str = Field(description="'blake3:<hex>' of the content.")
    metadata: dict[str, str] = Field(description="The name/value pairs given at upload; {} when none.")


class CompletedUploadResponse(FileResponse):
    """A session that completed at once (empty, or deduplicated): the file, plus the session it came from."""

    id: str
    offset: int
    size: int
    deduplicated: bool = Field(
        description="The content was stored already, in a bucket the token may read: no byte needs sending."
    )


class Bucket(BaseModel):
    name: str


class BucketList(BaseModel):
    data: list[Bucket]


class FileList(BaseModel):
    data: list[FileResponse]
    has_more: bool


class TokenInfo(BaseModel):
    """What the calling token may do: clients check it before work that a refusal would waste."""

    name: str | None = Field(description="The token's name; null when the service is open.")
    open: bool = Field(description="No tokens are configured: every request may do everything.")
    buckets: dict[str, list[Action]] = Field(description="The actions per bucket, '*' standing for every bucket.")


class ErrorResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    detail: str
    code: str | None = Field(default=None, description="Machine-readable error code.")
    offset: int | None = Field(default=None, description="The session's current offset, on offset conflicts.")
