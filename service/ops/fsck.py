"""`files-service fsck`: check the data directory (or the object store of FILES_STORAGE_URL) against
itself, and repair what it can. Every check goes through the ports and the `Checked*` capabilities,
so both stores get the same ones.

What it finds:
- corrupt blob: content that no longer hashes to its name (repair: moved to quarantine/ beside the
  blobs);
- missing blob: an entry whose blob is gone or was corrupt (repair: the entry is removed,
  since its content cannot be served);
- unreferenced blob: a blob no entry needs, older than FILES_BLOB_GRACE_SECONDS (repair: deleted,
  unless an entry is unreadable: it may be the one that needs the blob);
- stray partial: a staging file whose session Redis does not know (repair: deleted; on an object
  store its multipart upload is aborted), judged as `Sessions` below says;
- stray temporary: a leftover `.<name>.<writer>.tmp` from an interrupted write (on an object store,
  a multipart upload outside the staged ones), older than a lock lease, as the sweeper judges it
  (repair: deleted, aborted);
- unreadable entry: an entry file that is not a valid entry (reported only: a person should look).

Safe beside running services: it holds the data directory's lock (service/ops/dirlock.py) for its
whole run, without waiting for it. Without FILES_REDIS_URL it asks for it alone: if it gets it, no
service runs (and none can start until it ends), so no session of an embedded Redis stand-in is
alive and every partial file is stray; if not, a service runs whose sessions it cannot see, and
partial files are reported as not checked, never removed, and missing or unreferenced blobs are
reported, not repaired (that service's index lives in its process). With FILES_REDIS_URL it shares the lock
with services on that Redis, and deletions go through the same leases as theirs.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.config import Settings
from service.core.errors import BlobMissing
from service.core.model import Entry
from service.core.ports import CheckedBlobs, CheckedEntries, CheckedStaging
from service.ops.dirlock import DataDirLock
from service.services import Services


class Sessions(enum.Enum):
    """What fsck knows of the upload sessions that may own partial files."""

    ALONE = "alone"  # no service runs: a partial file whose session its Redis does not know is stray
    SHARED = "shared"  # services may run on its Redis: stray once also unwritten for a lock lease
    HIDDEN = "hidden"  # a service runs whose sessions it cannot see: partial files are not checked


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str  # a path, or an object's s3:// URL
    detail: str
    repaired: bool = False
    problem: bool = True  # False: noted, not a problem, never touched

    def line(self) -> str:
        state = "repaired" if self.repaired else "found" if self.problem else "skipped"
        return f"{state:8} {self.kind:18} {self.where}  {self.detail}"


class Checker:
    """The same checks on any store that has the `Checked*` capabilities (the data volume, an object store)."""

    def __init__(self, services: Services, repair: bool, sessions: Sessions) -> None:
        blobs, staging, entries = services.blobs, services.staging, services.entries
        if not (
            isinstance(blobs, CheckedBlobs)
            and isinstance(staging, CheckedStaging)
            and isinstance(entries, CheckedEntries)
        ):
            raise TypeError("fsck checks stores that say where things lie (the data volume, an object store)")
        self.services = services
        self.blobs: CheckedBlobs = blobs
        self.staging: CheckedStaging = staging
        self.entries: CheckedEntries = entries
        self.repair = repair
        self.sessions = sessions
        # Beside a service with an embedded Redis stand-in, whose index of the files lives in its process,
        # entries and blobs are only reported: removing one would leave that service listing it.
        self.fix_files = repair and sessions is not Sessions.HIDDEN
        self.findings: list[Finding] = []

    def report(self, kind: str, where: str, detail: str, repaired: bool = False, problem: bool = True) -> None:
        self.findings.append(Finding(kind, where, detail, repaired, problem))

    async def run(self) -> list[Finding]:
        entries = await asyncio.to_thread(self.read_entries)
        bad = await self.check_blobs()
        await self.check_entries(entries, bad)
        await self.check_unreferenced({entry.digest for entry in entries} | bad)
        await self.check_partials()
        await asyncio.to_thread(self.check_temporaries)
        return self.findings

    def read_entries(self) -> list[Entry]:
        found, damaged = self.entries.audit()
        for where, why in damaged:
            self.report("unreadable entry", where, why)
        return found

    async def check_blobs(self) -> set[str]:
        """Re-hash every blob; returns the digests whose blob is corrupt."""
        blobs = self.services.blobs
        corrupt = set()
        for blob in await asyncio.to_thread(lambda: list(blobs.list())):
            try:
                actual = await asyncio.to_thread(self.blobs.rehash, blob.digest)
            except BlobMissing:
                continue  # deleted meanwhile
            if actual == blob.digest:
                continue
            corrupt.add(blob.digest)
            where = self.blobs.where(blob.digest)
            if self.repair:
                await asyncio.to_thread(self.blobs.quarantine, blob.digest)
            self.report("corrupt blob", where, f"content hashes to {actual}", self.repair)
        return corrupt

    async def check_entries(self, entries: list[Entry], corrupt: set[str]) -> None:
        catalog = self.services.catalog
        for entry in entries:
            if entry.digest not in corrupt and self.services.blobs.stat(entry.digest) is not None:
                continue
            repaired = False
            if self.fix_files:
                await catalog.delete(entry.bucket, entry.key)
                repaired = True
            self.report(
                "missing blob",
                self.entries.where(entry.bucket, entry.key),
                f"{entry.bucket}/{entry.key} points at blob {entry.digest}, which is "
                + ("corrupt" if entry.digest in corrupt else "missing")
                + self.not_repaired_beside_a_service(),
                repaired,
            )

    async def check_unreferenced(self, needed: set[str]) -> None:
        catalog = self.services.catalog
        cutoff = time.time() - self.services.settings.blob_grace_seconds
        # An unreadable entry may be the one that needs a blob: free none until a person has looked.
        keep = any(finding.kind == "unreadable entry" for finding in self.findings)
        await catalog.index.rebuild()
        for blob in await asyncio.to_thread(lambda: list(self.services.blobs.list())):
            if blob.digest in needed or blob.modified >= cutoff:
                continue
            repaired = self.fix_files and not keep and await catalog.release_blob(blob.digest)
            kept = "; kept while an entry is unreadable" if self.repair and keep else ""
            self.report(
                "unreferenced blob",
                self.blobs.where(blob.digest),
                f"{blob.size} bytes no entry refers to{kept}{self.not_repaired_beside_a_service()}",
                repaired,
            )

    def not_repaired_beside_a_service(self) -> str:
        """Why a file's repair is left undone (`fix_files`): the index of that service's files, and its
        commits under way, live in its process, which this one cannot reach."""
        if not self.repair or self.fix_files:
            return ""
        return "; not repaired: a running service keeps its own index (no FILES_REDIS_URL): stop it first"

    async def check_partials(self) -> None:
        """Staged uploads no session owns; on an object store, removing one aborts its multipart upload."""
        staging = self.services.staging
        names = await asyncio.to_thread(staging.names)
        if self.sessions is Sessions.HIDDEN:
            for name in names:
                self.report(
                    "unchecked partial", self.staging.where(name), "partial of a running service", problem=False
                )
            return
        known = await self.services.sessions.exist(names) if names else []
        idle = self.services.settings.lock_lease_seconds if self.sessions is Sessions.SHARED else 0.0
        cutoff = time.time() - idle
        for name, alive in zip(names, known, strict=True):
            written = None if alive else await asyncio.to_thread(self.staging.written, name)
            if written is None or written >= cutoff:  # owned, gone meanwhile, or written a moment ago
                continue
            if self.repair:
                await asyncio.to_thread(staging.remove, name)
            self.report("stray partial", self.staging.where(name), "no upload session owns it", self.repair)

    def check_temporaries(self) -> None:
        """The sweeper's rule: a temporary (a multipart upload outside the staged ones) older than a
        lock's lease belongs to a writer that died."""
        temporaries = self.services.temporaries
        for name in temporaries.stale(time.time() - self.services.settings.lock_lease_seconds):
            if self.repair:
                temporaries.remove(name)
            self.report("stray temporary", name, "left by an interrupted write", self.repair)


async def fsck(
    services: Services, repair: bool, emit: Callable[[str], None], sessions: Sessions = Sessions.SHARED
) -> int:
    """Run the check, print a line per finding; exit status 0 when nothing is left unrepaired."""
    findings = await Checker(services, repair, sessions).run()
    for finding in findings:
        emit(finding.line())
    problems = [finding for finding in findings if finding.problem]
    repaired = sum(finding.repaired for finding in problems)
    emit(f"fsck: {len(problems)} problem(s) found, {repaired} repaired")
    if unchecked := len(findings) - len(problems):
        emit(
            f"fsck: {unchecked} partial file(s) not checked: a running service holds the data directory and "
            "keeps upload sessions this fsck cannot see; to check them, stop it, or run fsck with "
            "FILES_REDIS_URL set to the service's Redis"
        )
    return 1 if repaired < len(problems) else 0


async def check_data_dir(settings: Settings, repair: bool, emit: Callable[[str], None]) -> int:
    """`files-service fsck`: the check under the data directory's lock, held until it ends."""
    embedded = settings.redis_url is None
    lock = DataDirLock.try_acquire(settings.data_dir, exclusive=embedded)
    sessions = Sessions.HIDDEN if lock is None else Sessions.ALONE if embedded else Sessions.SHARED
    try:
        services = Services.build(settings)
        try:
            return await fsck(services, repair, emit, sessions)
        finally:
            await services.client.aclose()
    finally:
        if lock is not None:
            lock.release()
