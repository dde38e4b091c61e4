"""The stored files: entries on the volume, the index in Redis, and the blobs they point to.

Exclusion (all by leases in Redis, so it holds across processes and machines):
- `blob:<digest>` is held by a commit from placing (or reusing) the blob until its
  entry is written and counted in the index, and by whoever frees that blob while
  it checks that nothing refers to it and deletes it. So a commit of the same
  content either sees the blob gone and places it anew, or is counted first.
- `entry:<bucket>/<key>` is held while one entry is replaced or removed, so the
  volume and the index change in the same order.
A commit takes both in one step (all or none), so it cannot deadlock with a delete.

Crashes: a commit or delete records its intent with its locks (the `Intents` port); a
process killed half-way leaves the intent behind, and `settle_stranded` later takes the same
locks and makes the index agree with the volume for that key (the entry written: rolled
forward; not written: rolled back, the blob freed if nothing needs it). docs/design.md has
the failure table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from service.core.crashpoints import crash_point
from service.core.errors import BlobMissing, FileNotFound, LostLocks, OutsideRoot, Unavailable
from service.core.model import Entry, Intent
from service.core.ports import (
    BlobStore,
    ContentWriter,
    EntryIndex,
    EntryStore,
    Intents,
    Leases,
    Observer,
    StagingArea,
)

log = logging.getLogger("files.catalog")

EXPIRY_BATCH = 100


class Catalog:
    def __init__(
        self,
        entries: EntryStore,
        index: EntryIndex,
        blobs: BlobStore,
        staging: StagingArea,
        leases: Leases,
        intents: Intents,
        observer: Observer,
        writer: ContentWriter | None = None,
    ) -> None:
        self.entries = entries
        self.index = index
        self.blobs = blobs
        self.staging = staging
        self.leases = leases
        self.intents = intents
        self.observer = observer
        self.writer = writer

    async def commit(self, entry: Entry, source: str | bytes) -> None:
        """Store the upload's content, hashed to `entry.digest`, and write the entry for it: `source` is
        the name of its staged upload, or the content itself when the whole upload is held in memory."""
        if not await self._write(entry, source):
            self.observer.deduplicated(entry.bytes)

    async def link(self, entry: Entry) -> None:
        """Write the entry for content the blob store holds already: no byte is read or written again.

        The blob is looked for under its lock, so no release of it runs meanwhile; BlobMissing
        (nothing written) when there is none of the entry's digest and size, as when the last
        entry that needed it went since the caller found it.
        """
        await self._write(entry, None)

    async def _write(self, entry: Entry, source: str | bytes | None) -> bool:
        """Place the blob (from `source`, as `commit` takes it; None: it must be there already), write the
        entry and count it in, under the locks and with the intent of the change; whether the blob was
        newly placed."""
        intent = Intent(bucket=entry.bucket, key=entry.key, digest=entry.digest)
        async with self.leases.hold(*intent.locks(), intent=intent) as lease:
            try:
                placed, replaced = await self._store(entry, source)
            except BlobMissing:
                await lease.settle()  # nothing changed
                raise
            try:
                unindexed = await self.index.put(entry, release=lease)
            except LostLocks:
                lost = True
            else:
                lost = False
                crash_point("index-updated")
        if lost:
            # Redis lost its data (or the lease ran out) mid-commit, and the claim on the content may have
            # gone with the locks: counting the entry in on the old claim would leave it unreferenced, its
            # blob free to go. So, as the sweep settles a change cut short, under new locks the index is
            # made to agree with the volume, which refers to the content anew. The sweep may have settled
            # this very change meanwhile (its locks free, its entry not yet written: rolled back, the blob
            # freed), so the blob is placed again first, from the source still at hand.
            async with self.leases.hold(*intent.locks()):
                if source is not None:
                    await asyncio.to_thread(place_blob, self.blobs, self.staging, entry, source)
                unindexed = await self._reconcile(entry.bucket, entry.key)
        # The volume's old entry and the index's are the same one, unless a crash parted them.
        for digest in _other_digests(entry.digest, replaced.digest if replaced else None, unindexed):
            await self.release_blob(digest)
        return placed

    async def _store(self, entry: Entry, source: str | bytes | None) -> tuple[bool, Entry | None]:
        """`store_content` away from the event loop: content held in memory goes to the content writer, when
        there is one that takes that much; anything else, and every commit without one, to a worker thread."""
        if isinstance(source, bytes) and self.writer is not None and len(source) <= self.writer.most:
            return await self.writer.store(entry, source)
        return await asyncio.to_thread(store_content, self.blobs, self.entries, self.staging, entry, source)

    async def get(self, bucket: str, key: str) -> Entry:
        entry = await asyncio.to_thread(self.entries.get, bucket, key)
        if entry is None:
            raise FileNotFound(f"no file {key!r} in bucket {bucket!r}")
        return entry

    async def delete(self, bucket: str, key: str, only_if: Callable[[Entry], bool] | None = None) -> Entry:
        """Delete the entry (with `only_if`, only when that holds for it under the entry's lock:
        FileNotFound else) and free its blob if nothing else refers to it."""
        # The index must hold the entry to take it out (and to say so in the same step, the event).
        await self.index.rebuild()
        intent = Intent(bucket=bucket, key=key)
        async with self.leases.hold(*intent.locks(), intent=intent) as lease:
            entry = await asyncio.to_thread(self.entries.get, bucket, key)
            if entry is None or (only_if is not None and not only_if(entry)):
                await lease.settle()
                raise FileNotFound(f"no file {key!r} in bucket {bucket!r}")
            await asyncio.to_thread(self.entries.delete, bucket, key)
            unindexed = await self.index.remove(bucket, key, release=lease)
        for digest in _other_digests(None, entry.digest, unindexed):
            await self.release_blob(digest)
        return entry

    async def buckets(self) -> list[str]:
        return await self.index.buckets()

    async def page(
        self,
        bucket: str,
        prefix: str,
        after: str | None,
        limit: int,
        reverse: bool = False,
        purpose: str | None = None,
    ) -> tuple[list[Entry], bool]:
        return await self.index.page(bucket, prefix, after, limit, reverse, purpose)

    async def expire(self, now: float) -> int:
        """Delete every file whose metadata `expires_at` (unix seconds) is `now` or earlier, through
        `delete` (its event appended, its blob freed when unreferenced); the number deleted."""
        deleted, seen = 0, set[tuple[str, str]]()
        while due := [item for item in await self.index.expired(now, EXPIRY_BATCH) if item not in seen]:
            seen.update(due)
            for bucket, key in due:
                try:
                    await self.delete(bucket, key, only_if=lambda entry: expired(entry, now))
                    deleted += 1
                except Unavailable:
                    continue  # the key is busy: the next sweep tries again
                except FileNotFound:
                    # Replaced by a file that does not expire (yet), or gone already: the index is told.
                    async with self.leases.hold(f"entry:{bucket}/{key}"):
                        unindexed = await self._reconcile(bucket, key)
                    if unindexed is not None:
                        await self.release_blob(unindexed)
        return deleted

    async def held_in(self, digest: str, buckets: Collection[str] | None) -> bool:
        """Whether a file of one of `buckets` (None: of any bucket) has the content `digest` (see EntryIndex)."""
        return await self.index.held_in(digest, buckets)

    async def release_blob(self, digest: str) -> bool:
        """Delete the blob if no entry refers to it any more; True when it was deleted.

        The counts are only trusted from a complete index, so a lost one is rebuilt first.
        """
        await self.index.rebuild()
        async with self.leases.hold(f"blob:{digest}"):
            if await self.index.unreferenced(digest):
                return await asyncio.to_thread(self.blobs.delete, digest)
        return False

    async def settle_stranded(self) -> int:
        """Finish or undo the changes of processes that died half-way; the number settled.

        Under the same locks as the change itself (so after any commit or delete of that key or
        content in flight), the index is made to agree with the volume for the key: an entry
        written is counted (rolled forward), one not written leaves the index as it was (rolled
        back). Then the intent goes, and a blob the change placed is freed unless an entry or
        another intent still names it. First, the follow-ups (events) of changes made in the index
        by processes that died before applying them.
        """
        await self.index.rebuild()
        await self.index.apply_all()
        settled = 0
        for token, intent in await self.intents.stranded():
            try:
                unindexed = await self._settle(token, intent)
            except Unavailable:
                continue  # the key is busy: the next sweep tries again
            except (OSError, OutsideRoot, ValueError) as error:  # a damaged entry: fsck's, not the sweep's
                log.warning("cannot settle the change of %s/%s cut short: %s", intent.bucket, intent.key, error)
                continue
            if unindexed is not None and unindexed != intent.digest:
                await self.release_blob(unindexed)
            settled += 1
        return settled

    async def _settle(self, token: str, intent: Intent) -> str | None:
        async with self.leases.hold(*intent.locks()):
            unindexed = await self._reconcile(intent.bucket, intent.key)
            forgotten = await self.intents.forget(token, intent)
            if forgotten and intent.digest is not None and await self.index.unreferenced(intent.digest):
                await asyncio.to_thread(self.blobs.delete, intent.digest)
        return unindexed

    async def catch_up(self) -> int:
        """After a rebuild, reconcile the keys whose entries changed while it ran; the number looked at.

        A commit whose locks and intent went with Redis's data may write its entry after the
        rebuild's scan passed that entry's directory and die before counting it in the index: it
        is then on the volume, served, but neither listed nor counted, and no intent says so.
        Once a lease has passed since the latest rebuild began (every such commit has finished or
        died by then), every entry written since the earliest one began, less a lease for clocks
        that differ, is reconciled under its entry lock, as `settle_stranded` does.
        """
        await self.index.rebuild()
        window = await self.index.rebuild_window()
        if window is None or time.time() < window[1] + self.leases.seconds:
            return 0
        changed_since = window[0] - self.leases.seconds
        changed = await asyncio.to_thread(lambda: list(self.entries.scan(changed_since)))
        for entry in changed:
            try:
                async with self.leases.hold(f"entry:{entry.bucket}/{entry.key}"):
                    unindexed = await self._reconcile(entry.bucket, entry.key)
            except Unavailable:
                return 0  # the key is busy: the next sweep catches up
            if unindexed is not None:
                await self.release_blob(unindexed)
        await self.index.caught_up(window[1])
        return len(changed)

    async def _reconcile(self, bucket: str, key: str) -> str | None:
        """Make the index hold what the volume holds for one key (under its entry lock); returns the
        digest of the entry the index held before, when that changed."""
        stored = await asyncio.to_thread(self.entries.get, bucket, key)
        indexed = await self.index.get(bucket, key)
        if stored == indexed:
            return None
        if stored is not None:
            return await self.index.put(stored)
        return await self.index.remove(bucket, key)

    async def sweep_blobs(self, grace_seconds: float) -> BlobSweep:
        """Delete blobs no entry refers to that are older than the grace period, and count the rest."""
        await self.index.rebuild()
        cutoff = time.time() - grace_seconds
        listing = await asyncio.to_thread(lambda: list(self.blobs.list()))
        referenced = await self.index.referenced([blob.digest for blob in listing if blob.modified < cutoff])
        sweep = BlobSweep(deleted=0, blobs=len(listing), bytes=sum(blob.size for blob in listing))
        if referenced is None:  # Redis lost its data again mid-sweep: free nothing this time
            return sweep
        for blob in listing:
            if blob.digest not in referenced and blob.modified < cutoff and await self.release_blob(blob.digest):
                sweep.deleted += 1
                sweep.blobs -= 1
                sweep.bytes -= blob.size
        return sweep


def store_content(
    blobs: BlobStore, entries: EntryStore, staging: StagingArea | None, entry: Entry, source: str | bytes | None
) -> tuple[bool, Entry | None]:
    """Place the blob and write the entry, blocking: (newly placed?, entry replaced). A function of the
    stores alone, so that a `ContentWriter` can run it in a process of its own.

    `source` is as `Catalog.commit` takes it (the name of an upload staged in `staging`, or the
    content), or None: the blob must be there already (else BlobMissing). The caller holds the
    locks of the change and has recorded its intent. Should either step fail, the intent stays
    behind (the lease lets go without dropping it) and the sweeper settles it; a blob just placed
    that no entry can need goes at once.
    """
    if source is not None:
        placed = place_blob(blobs, staging, entry, source)
    else:
        blob = blobs.stat(entry.digest)
        if blob is None or blob.size != entry.bytes:
            raise BlobMissing(f"no blob {entry.digest} of {entry.bytes} bytes")
        placed = False
    crash_point("blob-placed")
    try:
        replaced = entries.put(entry)
    except BaseException:
        if placed and not _readable(entries, entry):
            blobs.delete(entry.digest)
        raise
    crash_point("entry-written")
    return placed, replaced


def place_blob(blobs: BlobStore, staging: StagingArea | None, entry: Entry, source: str | bytes) -> bool:
    """Make `source` (a staged upload's name, or the content) the entry's blob; whether it was new."""
    if isinstance(source, bytes):
        return blobs.store(source, entry.digest)
    if staging is None:
        raise TypeError("a staged upload needs its staging area")
    return blobs.commit(staging, source, entry.digest)


def _readable(entries: EntryStore, entry: Entry) -> bool:
    """Whether `entry` can be read back from the volume: a write that failed after its rename
    (flushing the directory) left it there, and its blob must stay."""
    try:
        return entries.exists(entry)
    except (OSError, OutsideRoot, ValueError):  # a planted link, a damaged file: no reader gets it
        return False


def expired(entry: Entry, now: float) -> bool:
    """Whether the entry's metadata `expires_at` (unix seconds) is `now` or earlier."""
    expires_at = entry.metadata.get("expires_at", "")
    return expires_at.isascii() and expires_at.isdigit() and int(expires_at) <= now


@dataclass
class BlobSweep:
    deleted: int
    blobs: int
    bytes: int


def _other_digests(kept: str | None, *digests: str | None) -> set[str]:
    """The digests given, once each, but for `kept` and the missing ones: the blobs to release."""
    return {digest for digest in digests if digest is not None and digest != kept}
