"""The name rules of the contract: buckets, keys, media types, digests and metadata."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping

from service.core.errors import InvalidRequest, SessionNotFound

BUCKET = re.compile(r"[a-zA-Z0-9_-]{1,63}")
KEY_CHARACTERS = re.compile(r"[a-zA-Z0-9_\-/.]{1,1024}")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"(?:[^\"\\\x00-\x1f\x7f]|\\.)*\"))*")
DIGEST = re.compile(r"(blake3|sha256):([0-9a-fA-F]{64})")
SESSION_ID = re.compile(r"[0-9a-f]{32}")
METADATA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_METADATA_PAIRS = 32
MAX_METADATA_VALUE = 1024
NOT_IN_KEY_SEGMENT = re.compile(r"[^a-zA-Z0-9_\-.]")


def bucket_error(bucket: str) -> str | None:
    """Why `bucket` breaks the rules, or None when it keeps them."""
    if not BUCKET.fullmatch(bucket):
        return "bucket must be 1 to 63 characters of a-z, A-Z, 0-9, '_' and '-'"
    return None


def key_error(key: str) -> str | None:
    """Why `key` breaks the rules, or None when it keeps them."""
    if not KEY_CHARACTERS.fullmatch(key):
        return "key must be 1 to 1024 characters of a-z, A-Z, 0-9, '_', '-', '/' and '.'"
    if key.startswith("/"):
        return "key must not start with '/'"
    for segment in key.split("/"):
        if segment == "":
            return "key must not have an empty segment ('a//b') or end with '/'"
        if segment in (".", ".."):
            return "key must not have a '.' or '..' segment"
    return None


def mime_type_error(mime_type: str) -> str | None:
    if not MEDIA_TYPE.fullmatch(mime_type):
        return "mime_type must be a media type such as 'application/octet-stream'"
    return None


def digest_error(digest: str) -> str | None:
    if not DIGEST.fullmatch(digest):
        return "digest must be 'blake3:<64 hex>' or 'sha256:<64 hex>'"
    return None


def metadata_error(metadata: Mapping[str, str]) -> str | None:
    """Why `metadata` breaks the rules (at most 32 pairs, names of 1 to 64 a-zA-Z0-9_-, values up
    to 1024 characters), or None when it keeps them."""
    if len(metadata) > MAX_METADATA_PAIRS:
        return f"metadata may hold at most {MAX_METADATA_PAIRS} pairs, not {len(metadata)}"
    for name, value in metadata.items():
        if not METADATA_NAME.fullmatch(name):
            return f"metadata name {name[:80]!r} must be 1 to 64 characters of a-z, A-Z, 0-9, '_' and '-'"
        if len(value) > MAX_METADATA_VALUE:
            return f"metadata value of {name!r} is {len(value)} characters, over {MAX_METADATA_VALUE}"
    return None


def new_session_id() -> str:
    return secrets.token_hex(16)


def default_key(session_id: str, filename: str | None) -> str:
    """`<id>/<filename>` with every character a key may not hold (and '/') replaced by '_'; `<id>` when
    there is no file name. A name of only dots would be a '.' or '..' segment: its dots go too."""
    if not filename:
        return session_id
    segment = NOT_IN_KEY_SEGMENT.sub("_", filename)
    if segment.strip(".") == "":
        segment = "_" * len(segment)
    return f"{session_id}/{segment}"[:1024]


def check_bucket(bucket: str) -> str:
    """`bucket`, or InvalidRequest saying why it breaks the rules."""
    if (problem := bucket_error(bucket)) is not None:
        raise InvalidRequest(problem)
    return bucket


def check_key(key: str) -> str:
    """`key`, or InvalidRequest saying why it breaks the rules."""
    if (problem := key_error(key)) is not None:
        raise InvalidRequest(problem)
    return key


def check_metadata(metadata: Mapping[str, str]) -> Mapping[str, str]:
    """`metadata`, or InvalidRequest saying why it breaks the rules."""
    if (problem := metadata_error(metadata)) is not None:
        raise InvalidRequest(f"metadata: {problem}")
    return metadata


def check_session_id(session_id: str) -> str:
    """`session_id`, or SessionNotFound: an id this service cannot have made names no session."""
    if not SESSION_ID.fullmatch(session_id):
        raise SessionNotFound()
    return session_id


def check_upload(
    bucket: str, key: str, mime_type: str, size: int | None, digest: str | None, metadata: Mapping[str, str]
) -> None:
    """InvalidRequest naming every field of a new upload that breaks the rules."""
    problems = [
        f"{field}: {problem}"
        for field, problem in (
            ("bucket", bucket_error(bucket)),
            ("key", key_error(key)),
            ("mime_type", mime_type_error(mime_type)),
            ("size", "size must be 0 or more" if size is not None and size < 0 else None),
            ("digest", digest_error(digest) if digest is not None else None),
            ("metadata", metadata_error(metadata)),
        )
        if problem is not None
    ]
    if problems:
        raise InvalidRequest("; ".join(problems))
