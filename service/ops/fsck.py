"""`files-service fsck`: check the data directory against itself, and repair what it can.

What it finds:
- corrupt blob: content that no longer hashes to its name (repair: moved to quarantine/);
- missing blob: an entry whose blob is gone or was corrupt (repair: the entry is removed,
  since its content cannot be served);
- unreferenced blob: a blob no entry needs, older than FILES_BLOB_GRACE_SECONDS (repair: deleted,
  unless an entry is unreadable: it may be the one that needs the blob);
- stray partial: a staging file whose session Redis does not know (repair: deleted), judged as
  `Sessions` below says;
- stray temporary: a leftover `.<name>.<writer>.tmp` from an interrupted write, unchanged for longer
  than a lock lease, as the sweeper judges it (repair: deleted);
- unreadable entry: an entry file that is not a valid entry (reported only: a person should look).

Safe beside running services: it holds the data directory's lock (service/ops/dirlock.py) for its
whole run, without waiting for it. Without FILES_REDIS_URL it asks for it alone: if it gets it, no
service runs (and none can start until it ends), so no session of an embedded Redis stand-in is
alive and every partial file is stray; if not, a service runs whose sessions it cannot see, and
partial files are reported as not checked, never removed. With FILES_REDIS_URL it shares the lock
with services on that Redis, and deletions go through the same leases as theirs.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from service.config import ConfigError, Settings
from service.core.digests import hash_file
from service.core.model import Entry
from service.ops.dirlock import DataDirLock
from service.services import Services
from service.storage.blobs import BlobStore
from service.storage.durable import make_dirs, stale_temporaries
from service.storage.entries import EntryStore
from service.storage.staging import StagingArea


class Sessions(enum.Enum):
    """What fsck knows of the upload sessions that may own partial files."""

    ALONE = "alone"  # no service runs: a partial file whose session its Redis does not know is stray
    SHARED = "shared"  # services may run on its Redis: stray once also unwritten for a lock lease
    HIDDEN = "hidden"  # a service runs whose sessions it cannot see: partial files are not checked


@dataclass(frozen=True)
class Finding:
    kind: str
    path: Path
    detail: str
    repaired: bool = False
    problem: bool = True  # False: noted, not a problem, never touched

    def line(self) -> str:
        state = "repaired" if self.repaired else "found" if self.problem else "skipped"
        return f"{state:8} {self.kind:18} {self.path}  {self.detail}"


class Checker:
    def __init__(self, services: Services, repair: bool, sessions: Sessions) -> None:
        if services.settings.storage_url is not None:
            raise ConfigError("fsck checks a data directory; it does not check an object store (FILES_STORAGE_URL) yet")
        if not isinstance(services.blobs, BlobStore) or not isinstance(services.staging, StagingArea):
            raise TypeError("fsck checks a data directory: the blobs and staged uploads must be kept in it")
        if not isinstance(services.entries, EntryStore):
            raise TypeError("fsck checks a data directory: the entries must be kept in it")
        self.services = services
        self.blobs = services.blobs
        self.staging = services.staging
        self.entries = services.entries
        self.repair = repair
        self.sessions = sessions
        self.findings: list[Finding] = []

    def report(self, kind: str, path: Path, detail: str, repaired: bool = False, problem: bool = True) -> None:
        self.findings.append(Finding(kind, path, detail, repaired, problem))

    async def run(self) -> list[Finding]:
        entries = await asyncio.to_thread(self.read_entries)
        bad = await self.check_blobs()
        await self.check_entries(entries, bad)
        await self.check_unreferenced({entry.digest for entry in entries} | bad)
        await self.check_partials()
        await asyncio.to_thread(self.check_temporaries)
        return self.findings

    def read_entries(self) -> list[Entry]:
        store = self.entries
        found = []
        for directory, _, files in os.walk(store.root):
            for name in files:
                path = Path(directory, name)
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                try:
                    entry = Entry.model_validate_json(path.read_bytes())
                except (OSError, ValidationError) as error:
                    self.report("unreadable entry", path, str(error).splitlines()[0])
                    continue
                if store.path(entry.bucket, entry.key) != path:
                    self.report("unreadable entry", path, f"holds {entry.bucket}/{entry.key}, which belongs elsewhere")
                    continue
                found.append(entry)
        return found

    async def check_blobs(self) -> set[str]:
        """Re-hash every blob; returns the digests whose blob is corrupt."""
        blobs = self.blobs
        corrupt = set()
        for blob in await asyncio.to_thread(lambda: list(blobs.list())):
            digest, path = blob.digest, blobs.path(blob.digest)
            actual = (await asyncio.to_thread(hash_file, path)).blake3
            if actual == digest:
                continue
            corrupt.add(digest)
            repaired = False
            if self.repair:
                quarantine = self.services.settings.data_dir / "quarantine"
                await asyncio.to_thread(make_dirs, quarantine)
                await asyncio.to_thread(os.replace, path, quarantine / f"{digest}.{int(time.time())}")
                repaired = True
            self.report("corrupt blob", path, f"content hashes to {actual}", repaired)
        return corrupt

    async def check_entries(self, entries: list[Entry], corrupt: set[str]) -> None:
        catalog = self.services.catalog
        for entry in entries:
            if entry.digest not in corrupt and self.blobs.stat(entry.digest) is not None:
                continue
            repaired = False
            if self.repair:
                await catalog.delete(entry.bucket, entry.key)
                repaired = True
            self.report(
                "missing blob",
                self.entries.path(entry.bucket, entry.key),
                f"{entry.bucket}/{entry.key} points at blob {entry.digest}, which is "
                + ("corrupt" if entry.digest in corrupt else "missing"),
                repaired,
            )

    async def check_unreferenced(self, needed: set[str]) -> None:
        catalog = self.services.catalog
        cutoff = time.time() - self.services.settings.blob_grace_seconds
        # An unreadable entry may be the one that needs a blob: free none until a person has looked.
        keep = any(finding.kind == "unreadable entry" for finding in self.findings)
        await catalog.index.rebuild()
        for blob in await asyncio.to_thread(lambda: list(self.blobs.list())):
            if blob.digest in needed or blob.modified >= cutoff:
                continue
            path = self.blobs.path(blob.digest)
            repaired = self.repair and not keep and await catalog.release_blob(blob.digest)
            kept = "; kept while an entry is unreadable" if self.repair and keep else ""
            self.report("unreferenced blob", path, f"{blob.size} bytes no entry refers to{kept}", repaired)

    async def check_partials(self) -> None:
        staging = self.staging
        names = await asyncio.to_thread(staging.names)
        if self.sessions is Sessions.HIDDEN:
            for name in names:
                self.report("unchecked partial", staging.path(name), "partial of a running service", problem=False)
            return
        known = await self.services.sessions.exist(names) if names else []
        idle = self.services.settings.lock_lease_seconds if self.sessions is Sessions.SHARED else 0.0
        cutoff = time.time() - idle
        for name, alive in zip(names, known, strict=True):
            if alive or not await asyncio.to_thread(written_before, staging.path(name), cutoff):
                continue
            if self.repair:
                await asyncio.to_thread(staging.remove, name)
            self.report("stray partial", staging.path(name), "no upload session owns it", self.repair)

    def check_temporaries(self) -> None:
        """The sweeper's rule: a temporary older than a lock's lease belongs to a writer that died."""
        cutoff = time.time() - self.services.settings.lock_lease_seconds
        for root in (self.blobs.root, self.entries.root, self.staging.root):
            for path in stale_temporaries(root, cutoff):
                if self.repair:
                    path.unlink(missing_ok=True)
                self.report("stray temporary", path, "left by an interrupted write", self.repair)


def written_before(path: Path, cutoff: float) -> bool:
    """Whether the file was last written before `cutoff`; a file gone meanwhile was not (nothing to do)."""
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


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
