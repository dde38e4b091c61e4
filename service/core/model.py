"""The core's data: what a front asks for, and what the stores hold and hand back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class NewUpload:
    """A session to open: what a front read from its request (checked again by the core)."""

    bucket: str
    key: str
    mime_type: str
    size: int | None  # None: declared later (while it is not, the service's limit bounds the upload)
    digest: str | None = None  # 'blake3:<hex>' or 'sha256:<hex>', lower case
    metadata: Mapping[str, str] = field(default_factory=dict)  # kept with the file
    session_id: str | None = None  # the id to give the session (a front whose key names it); else a new one
    part: bool = False  # a part of a concatenation: complete at its size, with no file (UploadCore.concatenate)


class Entry(BaseModel):
    """A stored file: what a bucket/key names, and the blob that holds its content.

    A pydantic model rather than a dataclass: the stores read and write it as JSON on every
    request, and pydantic's (de)serialiser is the fastest at hand.
    """

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    mime_type: str
    bytes: int
    created_at: int
    digest: str  # BLAKE3 hex of the content
    metadata: dict[str, str] = {}  # the client's name/value pairs; entries written before it have none


@dataclass(frozen=True)
class Session:
    """An upload in progress (or just completed) and how far it has got."""

    id: str
    bucket: str
    key: str
    mime_type: str
    size: int
    offset: int
    digest: str | None
    owner: str | None
    completed: bool
    created_at: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    length_deferred: bool = False  # the size is not known yet: `size` holds the service's limit meanwhile
    part: bool = False  # a part of a concatenation: its staged bytes wait, complete, for a final upload
    parts: tuple[str, ...] = ()  # a final upload: the parts its content was assembled from, in order


@dataclass(frozen=True)
class Created:
    """A session just opened (`UploadCore.create`), with its file when it completed at once."""

    session: Session
    file: Entry | None = None  # the session completed at once: it was empty, or deduplicated
    deduplicated: bool = False  # its content was stored already (where its principal may read): no byte need come


class Intent(BaseModel):
    """A change of one bucket/key in flight: a commit of the content `digest`, or a delete (no digest)."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    digest: str | None = None

    def locks(self) -> tuple[str, ...]:
        """The locks the change is made under, the same whoever makes or settles it."""
        entry = f"entry:{self.bucket}/{self.key}"
        return (f"blob:{self.digest}", entry) if self.digest is not None else (entry,)


@dataclass(frozen=True)
class BlobInfo:
    """A blob as its store lists it: `modified` (a unix time) is when it was last placed or reused."""

    digest: str
    size: int
    modified: float


@dataclass(frozen=True)
class PartedUpload:
    """An upload sent as parts, in any order and in parallel (OpenAI's Uploads), until it is completed
    from the parts the client names, in its order, or cancelled; the file it will be is fixed at the start."""

    id: str
    bucket: str
    key: str
    mime_type: str
    size: int
    metadata: Mapping[str, str]
    owner: str | None
    created_at: int
    expires_at: int
    status: str  # 'pending', 'completed', 'cancelled', or 'expired' (pending past `expires_at`)
    parts: frozenset[str] = frozenset()  # the part sessions added, by id
