"""The background sweep: changes cut short by a crash, files whose `expires_at` has passed, parted
uploads that expired (with their parts), partial data of sessions Redis no longer knows (on an
object store, their multipart uploads aborted), temporaries of interrupted writes, and blobs no
entry needs.

Every process runs the loop; a lease in Redis lets one sweep at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as redis

from service.core.catalog import BlobSweep, Catalog
from service.core.parted import PartedUploads
from service.core.ports import StagingArea, Temporaries
from service.ops import metrics
from service.redis.keyspace import KeySpace
from service.redis.leases import Leases, stop_if_cancelled
from service.redis.sessions import SessionStore

log = logging.getLogger("files.sweeper")

STAGING_BATCH = 500
# The walks over the whole store (temporaries, every blob) take their time in proportion to its files: the
# loop's sweeps make one only once WALK_PAUSE times as long as the last took has gone by (so they take at
# most a tenth of the time), and every sweep between does the rest.
WALK_PAUSE = 9


class Sweeper:
    def __init__(
        self,
        client: redis.Redis,
        keys: KeySpace,
        leases: Leases,
        sessions: SessionStore,
        staging: StagingArea,
        catalog: Catalog,
        parted: PartedUploads,
        temporaries: Temporaries,
        interval_seconds: float,
        blob_grace_seconds: float,
    ) -> None:
        self.client = client
        self.keys = keys
        self.leases = leases
        self.sessions = sessions
        self.staging = staging
        self.catalog = catalog
        self.parted = parted
        self.temporaries = temporaries
        self.interval_seconds = interval_seconds
        self.blob_grace_seconds = blob_grace_seconds

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sweep_once(paced=True)
            except (redis.ConnectionError, redis.TimeoutError) as error:
                # Redis out of reach is one line, not a trace every interval: the requests say it too (503).
                log.error(
                    "sweep failed: Redis did not answer (%s); trying again in %.0f s", error, self.interval_seconds
                )
            except Exception:
                log.exception("sweep failed; trying again in %.0f s", self.interval_seconds)
            stop_if_cancelled()
            await asyncio.sleep(self.interval_seconds)

    async def sweep_once(self, paced: bool = False) -> tuple[int, int] | None:
        """One sweep, unless another process is sweeping: (partials removed, blobs removed). `paced` (the
        loop's sweeps): the walks over the whole store only when the last one's pause is over (WALK_PAUSE)."""
        lease = await self.leases.acquire("sweep")
        if lease is None:
            return None
        started = time.monotonic()
        temporaries, blobs = 0, BlobSweep(deleted=0, blobs=0, bytes=0)
        try:
            async with lease.kept_alive():
                settled = await self.catalog.settle_stranded()
                await self.catalog.catch_up()
                expired = await self.catalog.expire(time.time())
                uploads_expired = await self.parted.sweep(time.time())
                partials = await self.sweep_staging()
                if walked := not paced or not await self.client.exists(self.keys.walked):
                    walk_started = time.monotonic()
                    temporaries = await asyncio.to_thread(self.sweep_temporaries)
                    blobs = await self.catalog.sweep_blobs(self.blob_grace_seconds)
                    await self.client.hset(self.keys.blob_stats, mapping={"blobs": blobs.blobs, "bytes": blobs.bytes})
                    pause = (time.monotonic() - walk_started) * WALK_PAUSE
                    await self.client.set(self.keys.walked, "1", px=max(1, int(pause * 1000)))
        finally:
            await lease.release()
        metrics.SWEEPS.inc()
        metrics.SESSIONS.labels("expired").inc(partials)
        log.info(
            "sweep settled %d change(s) cut short, deleted %d expired file(s), removed %d partial file(s), "
            "%d temporary file(s) and %d blob(s) in %.3f s%s",
            settled,
            expired,
            partials,
            temporaries,
            blobs.deleted,
            time.monotonic() - started,
            "" if walked else " (the store not walked: the last walk's pause is not over)",
            extra={
                "event": "sweep",
                "intents_settled": settled,
                "files_expired": expired,
                "uploads_expired": uploads_expired,
                "temporaries_removed": temporaries,
                "partials_removed": partials,
                "blobs_removed": blobs.deleted,
                "walked": walked,
                **({"blobs": blobs.blobs, "blob_bytes": blobs.bytes} if walked else {}),
            },
        )
        return partials, blobs.deleted

    async def sweep_staging(self) -> int:
        """Remove the staging files of sessions that expired, were lost, or never finished cleanly."""
        names = await asyncio.to_thread(self.staging.names)
        removed = 0
        for start in range(0, len(names), STAGING_BATCH):
            batch = names[start : start + STAGING_BATCH]
            alive = await self.sessions.exist(batch)
            stale = [name for name, known in zip(batch, alive, strict=True) if not known]
            for name in stale:
                await asyncio.to_thread(self.staging.remove, name)
            removed += len(stale)
        return removed

    def sweep_temporaries(self) -> int:
        """Remove temporaries that no live writer can still be using: older than a lock's lease.

        A writer makes, flushes and renames its temporary (or completes its multipart upload) while
        it holds a lease (renewed while it lives), so one older than a lease belongs to a writer that died.
        """
        stale = self.temporaries.stale(time.time() - self.leases.seconds)
        for name in stale:
            self.temporaries.remove(name)
        return len(stale)
