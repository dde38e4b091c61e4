"""The name rules of the contract: buckets, keys, media types and digests."""

from __future__ import annotations

import re

BUCKET = re.compile(r"[a-zA-Z0-9_-]{1,63}")
KEY_CHARACTERS = re.compile(r"[a-zA-Z0-9_\-/.]{1,1024}")
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"(?:[^\"\\\x00-\x1f\x7f]|\\.)*\"))*")
DIGEST = re.compile(r"(blake3|sha256):([0-9a-fA-F]{64})")


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
