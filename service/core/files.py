"""Stored files as a principal sees them: the name and permission checks of every read and delete.

A front calls these and only turns their answers and errors into its protocol's; the catalog
below them knows no principals (the sweeper and fsck use it directly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing

from blake3 import blake3

from service.core import names
from service.core.auth import Action, Principal
from service.core.catalog import Catalog
from service.core.errors import BlobMissing, CorruptBlob, FileNotFound, InvalidRequest
from service.core.model import Entry

log = logging.getLogger("files.download")


class Files:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def buckets(self, principal: Principal) -> list[str]:
        """The buckets holding files that the principal may read."""
        return [name for name in await self.catalog.buckets() if principal.may("read", name)]

    async def page(
        self, principal: Principal, bucket: str, prefix: str, after: str | None, limit: int
    ) -> tuple[list[Entry], bool]:
        """Up to `limit` files of `bucket` whose keys start with `prefix`, after `after`; and whether more follow."""
        principal.require("read", names.check_bucket(bucket))
        return await self.catalog.page(bucket, prefix, after, limit)

    async def info(self, principal: Principal, bucket: str, key: str) -> Entry:
        """The file (FileNotFound when there is none); the principal must be allowed to read it."""
        _check(principal, "read", bucket, key)
        return await self.catalog.get(bucket, key)

    async def delete(self, principal: Principal, bucket: str, key: str) -> Entry:
        """Delete the file and return what it was; the principal must be allowed to delete it."""
        _check(principal, "delete", bucket, key)
        return await self.catalog.delete(bucket, key)

    async def copy(
        self, principal: Principal, source: tuple[str, str], target: tuple[str, str], metadata: Mapping[str, str] | None
    ) -> Entry:
        """Make the bucket/key `target` a file of the same content as `source` without reading or writing
        that content again (the same blob), and return it; `metadata` (None: the source's) replaces the
        source's. The principal must be allowed to read the source's bucket and to write the target's
        (Forbidden, before anything is looked up); FileNotFound when there is no source."""
        for bucket, key in (source, target):
            names.check_bucket(bucket)
            names.check_key(key)
        if metadata is not None and (problem := names.metadata_error(metadata)) is not None:
            raise InvalidRequest(f"metadata: {problem}")
        principal.require("read", source[0])
        principal.require("write", target[0])
        original = await self.catalog.get(*source)
        copied = original.model_copy(
            update={
                "bucket": target[0],
                "key": target[1],
                "created_at": int(time.time()),
                "metadata": dict(original.metadata if metadata is None else metadata),
            }
        )
        try:
            await self.catalog.link(copied)
        except BlobMissing:
            raise FileNotFound(
                f"the content of {source[1]!r} in bucket {source[0]!r} is missing from the blob store"
            ) from None
        return copied

    async def download(self, principal: Principal, bucket: str, key: str) -> Entry:
        """The file to download; its content comes from `content`. Checked as `info`."""
        _check(principal, "read", bucket, key)
        return await self.catalog.get(bucket, key)

    async def content(self, entry: Entry, first: int, length: int, whole: bool) -> AsyncGenerator[bytes, None]:
        """Stream `length` bytes of the file from `first` (the caller checked the range).

        FileNotFound at the first step when the blob is missing. When the `whole` file is sent its
        content is hashed as it is read, and the last chunk goes out only once the hash is known
        to match: a blob found corrupt ends in CorruptBlob before its end, so the client sees a
        broken download rather than a whole-looking wrong one.
        """
        hasher = blake3() if whole else None  # one thread: it runs beside the sending event loop
        stream = self.catalog.blobs.read(entry.digest, first, length, hasher.update if hasher else None)
        sent = 0
        async with aclosing(stream):
            try:
                async for data in stream:
                    sent += len(data)
                    if sent == length:
                        _verify(entry, hasher)
                    yield data
            except BlobMissing:
                raise FileNotFound(
                    f"the content of {entry.key!r} in bucket {entry.bucket!r} is missing from the blob store"
                ) from None
        if length == 0:
            _verify(entry, hasher)


def _check(principal: Principal, action: Action, bucket: str, key: str) -> None:
    """The names first (InvalidRequest), then the permission (Forbidden)."""
    names.check_bucket(bucket)
    names.check_key(key)
    principal.require(action, bucket)


def _verify(entry: Entry, hasher: blake3 | None) -> None:
    """CorruptBlob unless the content hashed (if any was) is the entry's."""
    if hasher is not None and hasher.hexdigest() != entry.digest:
        log.error("blob %s is corrupt: its content hashes to %s; download cut off", entry.digest, hasher.hexdigest())
        raise CorruptBlob(f"blob {entry.digest} is corrupt")
