"""The service's parts, built from the settings and wired together once."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis

from blobstore import BlobStore, StagingArea
from service.auth import Authenticator
from service.catalog import Catalog
from service.config import Settings
from service.connection import connect
from service.entries import EntryStore
from service.index import EntryIndex
from service.intents import Intents
from service.keyspace import KeySpace
from service.leases import Leases
from service.sessions import SessionStore
from service.sweeper import Sweeper
from service.uploads import UploadCore


@dataclass(frozen=True)
class Services:
    settings: Settings
    client: redis.Redis
    keys: KeySpace
    leases: Leases
    sessions: SessionStore
    staging: StagingArea
    catalog: Catalog
    core: UploadCore
    sweeper: Sweeper
    auth: Authenticator

    @classmethod
    def build(cls, settings: Settings, client: redis.Redis | None = None) -> Services:
        client = client if client is not None else connect(settings)
        keys = KeySpace(settings.redis_prefix)
        leases = Leases(client, keys, settings.lock_lease_seconds)
        entries = EntryStore(settings.data_dir / "entries")
        catalog = Catalog(
            entries,
            EntryIndex(client, keys, leases, entries),
            BlobStore(settings.data_dir / "blobs"),
            leases,
            Intents(client, keys),
        )
        staging = StagingArea(settings.data_dir / "partial")
        sessions = SessionStore(client, keys, leases, settings.session_ttl_seconds)
        return cls(
            settings=settings,
            client=client,
            keys=keys,
            leases=leases,
            sessions=sessions,
            staging=staging,
            catalog=catalog,
            core=UploadCore(
                sessions,
                staging,
                catalog,
                settings.max_upload_bytes,
                settings.max_open_sessions,
                settings.body_stall_seconds,
            ),
            sweeper=Sweeper(
                client,
                keys,
                leases,
                sessions,
                staging,
                catalog,
                settings.sweep_interval_seconds,
                settings.blob_grace_seconds,
            ),
            auth=Authenticator.from_file(settings.auth_tokens_file),
        )
