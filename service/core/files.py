"""Stored files as a principal sees them: the name and permission checks of every read and delete.

A front calls these and only turns their answers and errors into its protocol's; the catalog
below them knows no principals (the sweeper and fsck use it directly).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Hashable, Mapping
from contextlib import aclosing

from blake3 import blake3

from service.core import names
from service.core.auth import Action, Principal
from service.core.catalog import Catalog
from service.core.errors import BlobMissing, CorruptBlob, FileNotFound
from service.core.model import Entry
from service.core.ports import BlobStamps, BlobURLs

log = logging.getLogger("files.download")

REDIRECT_SECONDS = 300  # how long a download URL stays valid: long enough to start, short enough to leak little
KEPT_VERIFIED = 4096  # blobs whose stamp is kept: 1.6 MiB (measured with tracemalloc)


class Files:
    """With `urls`, downloads are redirects to URLs of the blob store rather than streamed through here."""

    def __init__(self, catalog: Catalog, urls: BlobURLs | None = None) -> None:
        self.catalog = catalog
        self.urls = urls
        stamps = catalog.blobs
        self._stamps = stamps if isinstance(stamps, BlobStamps) else None
        # The stamp of each blob a whole download here hashed and found right (least recent first).
        self._verified: OrderedDict[str, Hashable] = OrderedDict()

    async def buckets(self, principal: Principal) -> list[str]:
        """The buckets holding files that the principal may read."""
        return [name for name in await self.catalog.buckets() if principal.may("read", name)]

    async def page(
        self,
        principal: Principal,
        bucket: str,
        prefix: str,
        after: str | None,
        limit: int,
        reverse: bool = False,
        purpose: str | None = None,
    ) -> tuple[list[Entry], bool]:
        """Up to `limit` files of `bucket` whose keys start with `prefix`, after `after` in key order (or
        before it, in the reverse order), only those of one metadata `purpose` if given; and whether more follow."""
        principal.require("read", names.check_bucket(bucket))
        return await self.catalog.page(bucket, prefix, after, limit, reverse, purpose)

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
        if metadata is not None:
            names.check_metadata(metadata)
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

    def redirect(self, entry: Entry) -> str | None:
        """Where to send a client to GET the file's content from instead (the caller checked the principal
        through `download`); None to stream it from `content`."""
        return None if self.urls is None else self.urls.url_for(entry.digest, entry.mime_type, REDIRECT_SECONDS)

    async def content(self, entry: Entry, first: int, length: int, whole: bool) -> AsyncGenerator[bytes, None]:
        """Stream `length` bytes of the file from `first` (the caller checked the range).

        FileNotFound at the first step when the blob is missing. When the `whole` file is sent it
        is verified, and the last chunk goes out only once it is: a blob found corrupt ends in
        CorruptBlob before its end, so the client sees a broken download rather than a
        whole-looking wrong one. Verified means hashed as it is read and matching, or, for a
        store that stamps blobs, still the very file that such a download hashed here (its stamp
        unchanged from before the first read to before the last chunk; see `_verify` for one
        touched meanwhile): a blob's content never changes but by damage, and a whole download
        need not hash every GiB again.
        """
        stamp = self._stamp(entry.digest) if whole else None
        trusted = stamp is not None and self._verified.get(entry.digest) == stamp
        hasher = blake3() if whole and not trusted else None  # one thread: it runs beside the sending event loop
        stream = self.catalog.blobs.read(entry.digest, first, length, hasher.update if hasher else None)
        sent = 0
        async with aclosing(stream):
            try:
                async for data in stream:
                    sent += len(data)
                    if whole and sent == length:
                        await self._verify(entry, hasher, stamp)
                    yield data
                if whole and length == 0:
                    await self._verify(entry, hasher, stamp)
            except BlobMissing:
                raise FileNotFound(
                    f"the content of {entry.key!r} in bucket {entry.bucket!r} is missing from the blob store"
                ) from None

    async def _verify(self, entry: Entry, hasher: blake3 | None, stamp: Hashable | None) -> None:
        """CorruptBlob unless the content sent is the entry's. Sent hashed: the hash must match. Sent
        unhashed (its stamp was a verified one): when the stamp changed meanwhile, the blob was touched
        while it was sent (placing the same content again refreshes its times; damage changes it), and
        it is hashed whole as it is now, which damage done meanwhile would still fail. A blob that
        hashed right and kept its stamp while it was hashed is recorded as verified."""
        digest = entry.digest
        now = self._stamp(digest)
        if hasher is None and now != stamp:
            hasher, stamp = blake3(), now
            async with aclosing(self.catalog.blobs.read(digest, 0, entry.bytes, hasher.update)) as again:
                async for _ in again:
                    pass
            now = self._stamp(digest)
        if hasher is not None and hasher.hexdigest() != digest:
            self._verified.pop(digest, None)
            log.error("blob %s is corrupt: its content hashes to %s; download cut off", digest, hasher.hexdigest())
            raise CorruptBlob(f"blob {digest} is corrupt")
        if stamp is not None and now == stamp:
            self._verified[digest] = stamp
            self._verified.move_to_end(digest)
            if len(self._verified) > KEPT_VERIFIED:
                self._verified.popitem(last=False)

    def _stamp(self, digest: str) -> Hashable | None:
        return self._stamps.stamp(digest) if self._stamps is not None else None


def _check(principal: Principal, action: Action, bucket: str, key: str) -> None:
    """The names first (InvalidRequest), then the permission (Forbidden)."""
    names.check_bucket(bucket)
    names.check_key(key)
    principal.require(action, bucket)
