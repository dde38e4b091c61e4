"""The service's parts, built from the settings and wired together once: the only place that
chooses the implementation of each port."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis

from service.config import ConfigError, Settings
from service.core import ports
from service.core.auth import Authenticator
from service.core.catalog import Catalog
from service.core.files import Files
from service.core.parted import PartedUploads
from service.core.uploads import UploadCore
from service.ops.metrics import Counters
from service.ops.sweeper import Sweeper
from service.ops.webhooks import WebhookDispatcher
from service.redis.connection import connect
from service.redis.events import EventStream
from service.redis.index import EntryIndex
from service.redis.intents import Intents
from service.redis.keyspace import KeySpace
from service.redis.leases import Leases
from service.redis.parted import PartedUploadStore
from service.redis.sessions import SessionStore
from service.storage.blobs import BlobStore
from service.storage.durable import VolumeProbe, VolumeTemporaries
from service.storage.entries import EntryStore
from service.storage.memory import MemoryBlobStore, MemoryStaging
from service.storage.staging import StagingArea
from service.storage.writers import WriterProcesses

MAX_PART_BYTES = 64 * 1024**2  # OpenAI's limit for one part of an upload


@dataclass(frozen=True)
class Services:
    settings: Settings
    client: redis.Redis
    keys: KeySpace
    leases: Leases
    sessions: SessionStore
    blobs: ports.BlobStore
    staging: ports.StagingArea
    entries: ports.EntryStore
    temporaries: ports.Temporaries
    probe: ports.StoreProbe
    catalog: Catalog
    core: UploadCore
    files: Files
    parted: PartedUploads
    sweeper: Sweeper
    auth: Authenticator
    webhooks: WebhookDispatcher | None
    writers: WriterProcesses | None

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis | None = None, in_memory: bool = False) -> Services:
        """With `in_memory`, blobs and staged uploads are kept in this process's memory (fast tests);
        entries stay on the data volume."""
        client = client if client is not None else connect(settings)
        keys = KeySpace(settings.redis_prefix)
        leases = Leases(client, keys, settings.lock_lease_seconds)
        entries: ports.EntryStore
        blobs: ports.BlobStore
        staging: ports.StagingArea
        writers: WriterProcesses | None = None
        if settings.storage_url is not None:
            # Imported only when chosen: boto3 alone adds about 15 MiB to every process.
            from service.storage import s3

            location = s3.object_store(settings.storage_url, settings.s3_endpoint_url)
            entries, blobs, staging = s3.S3EntryStore(location), s3.S3BlobStore(location), s3.S3Staging(location)
            temporaries: ports.Temporaries = s3.S3Temporaries(location)
            probe: ports.StoreProbe = s3.S3Probe(location)
        elif in_memory:
            entries = EntryStore(settings.data_dir / "entries")
            blobs, staging = MemoryBlobStore(), MemoryStaging()
            temporaries = VolumeTemporaries((entries.root,))
            probe = VolumeProbe(settings.data_dir)
        else:
            entries = EntryStore(settings.data_dir / "entries")
            blob_files, staging_files = (
                BlobStore(settings.data_dir / "blobs"),
                StagingArea(settings.data_dir / "partial"),
            )
            blobs, staging = blob_files, staging_files
            temporaries = VolumeTemporaries((blob_files.root, entries.root, staging_files.root))
            probe = VolumeProbe(settings.data_dir)
            if settings.writer_processes:
                writers = WriterProcesses(blob_files, entries, settings.writer_processes)
        counters = Counters()
        catalog = Catalog(
            entries,
            EntryIndex(client, keys, leases, entries, settings.events_maxlen),
            blobs,
            staging,
            leases,
            Intents(client, keys, leases.buckets),
            counters,
            writers,
        )
        sessions = SessionStore(client, keys, leases, settings.session_ttl_seconds)
        core = UploadCore(
            sessions,
            leases,
            staging,
            catalog,
            counters,
            settings.max_upload_bytes,
            settings.max_open_sessions,
            settings.body_stall_seconds,
        )
        parted = PartedUploads(
            core, PartedUploadStore(client, keys), settings.openai_upload_ttl_seconds, MAX_PART_BYTES
        )
        return cls(
            settings=settings,
            client=client,
            keys=keys,
            leases=leases,
            sessions=sessions,
            blobs=blobs,
            staging=staging,
            entries=entries,
            temporaries=temporaries,
            probe=probe,
            catalog=catalog,
            core=core,
            files=Files(catalog, _blob_urls(settings, blobs)),
            parted=parted,
            sweeper=Sweeper(
                client,
                keys,
                leases,
                sessions,
                staging,
                catalog,
                parted,
                temporaries,
                settings.sweep_interval_seconds,
                settings.blob_grace_seconds,
            ),
            auth=Authenticator.from_file(settings.auth_tokens_file),
            webhooks=WebhookDispatcher(
                EventStream(client, keys.events),
                settings.webhook_url,
                settings.webhook_secret,
                settings.webhook_retry_min_seconds,
                settings.webhook_retry_max_seconds,
                settings.webhook_timeout_seconds,
            )
            if settings.webhook_url
            else None,
            writers=writers,
        )


def _blob_urls(settings: Settings, blobs: ports.BlobStore) -> ports.BlobURLs | None:
    """The blob store's URLs when downloads are to be redirected to them (FILES_S3_PRESIGNED_DOWNLOADS)."""
    if not settings.s3_presigned_downloads:
        return None
    if not isinstance(blobs, ports.BlobURLs):
        raise ConfigError("FILES_S3_PRESIGNED_DOWNLOADS needs an object store (FILES_STORAGE_URL) to presign URLs of")
    return blobs
