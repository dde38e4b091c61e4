"""The stored files: entries on the volume, the index in Redis, and the blobs they point to.

Exclusion (all by leases in Redis, so it holds across processes and machines):
- `blob:<digest>` is held by a commit from placing (or reusing) the blob until its
  entry is written and counted in the index, and by whoever frees that blob while
  it checks that nothing refers to it and deletes it. So a commit of the same
  content either sees the blob gone and places it anew, or is counted first.
- `entry:<bucket>/<key>` is held while one entry is replaced or removed, so the
  volume and the index change in the same order.
A commit takes both in one step (all or none), so it cannot deadlock with a delete.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from blobstore import BlobStore
from service import metrics
from service.entries import Entry, EntryStore
from service.errors import FileNotFound
from service.index import EntryIndex
from service.leases import Leases


class Catalog:
    def __init__(self, entries: EntryStore, index: EntryIndex, blobs: BlobStore, leases: Leases) -> None:
        self.entries = entries
        self.index = index
        self.blobs = blobs
        self.leases = leases

    async def commit(self, entry: Entry, source: Path) -> None:
        """Store the content in `source` (hashed to `entry.digest`) and write the entry for it."""
        async with self.leases.hold(f"blob:{entry.digest}", f"entry:{entry.bucket}/{entry.key}") as lease:
            placed, replaced = await asyncio.to_thread(self._store, entry, source)
            await self.index.put(entry, release=lease)
        if not placed:
            metrics.DEDUPLICATED.inc()
            metrics.BYTES_SAVED.inc(entry.bytes)
        if replaced is not None and replaced.digest != entry.digest:
            await self.release_blob(replaced.digest)

    def _store(self, entry: Entry, source: Path) -> tuple[bool, Entry | None]:
        """Place the blob and write the entry (one trip to a worker thread): (newly placed?, entry replaced)."""
        placed = self.blobs.place(source, entry.digest)
        try:
            # Inside the try: a lookup that fails (a planted link, an unreadable entry) must not
            # leave the blob just placed without an entry either.
            replaced = self.entries.put(entry)
        except BaseException:
            # No entry can refer to a blob that appeared under our lease: leave none behind.
            if placed:
                self.blobs.delete(entry.digest)
            raise
        return placed, replaced

    async def get(self, bucket: str, key: str) -> Entry:
        entry = await asyncio.to_thread(self.entries.get, bucket, key)
        if entry is None:
            raise FileNotFound(f"no file {key!r} in bucket {bucket!r}")
        return entry

    async def delete(self, bucket: str, key: str) -> Entry:
        async with self.leases.hold(f"entry:{bucket}/{key}"):
            entry = await self.get(bucket, key)
            await asyncio.to_thread(self.entries.delete, bucket, key)
            await self.index.remove(bucket, key)
        await self.release_blob(entry.digest)
        return entry

    async def buckets(self) -> list[str]:
        return await self.index.buckets()

    async def page(self, bucket: str, prefix: str, after: str | None, limit: int) -> tuple[list[Entry], bool]:
        return await self.index.page(bucket, prefix, after, limit)

    async def release_blob(self, digest: str) -> bool:
        """Delete the blob if no entry refers to it any more; True when it was deleted.

        The counts are only trusted from a complete index, so a lost one is rebuilt first.
        """
        await self.index.rebuild()
        async with self.leases.hold(f"blob:{digest}"):
            if await self.index.unreferenced(digest):
                return await asyncio.to_thread(self.blobs.delete, digest)
        return False

    async def sweep_blobs(self, grace_seconds: float) -> BlobSweep:
        """Delete blobs no entry refers to that are older than the grace period, and count the rest."""
        await self.index.rebuild()
        referenced = await self.index.referenced()
        cutoff = time.time() - grace_seconds
        listing = await asyncio.to_thread(lambda: list(self.blobs.blobs()))
        sweep = BlobSweep(deleted=0, blobs=len(listing), bytes=sum(stat.st_size for _, stat in listing))
        if referenced is None:  # Redis lost its data again mid-sweep: free nothing this time
            return sweep
        for digest, stat in listing:
            if digest not in referenced and stat.st_mtime < cutoff and await self.release_blob(digest):
                sweep.deleted += 1
                sweep.blobs -= 1
                sweep.bytes -= stat.st_size
        return sweep


@dataclass
class BlobSweep:
    deleted: int
    blobs: int
    bytes: int
