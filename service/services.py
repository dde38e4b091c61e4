"""The service's parts, built from the settings and wired together once."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as redis

from service.config import Settings
from service.core.auth import Authenticator
from service.core.catalog import Catalog
from service.core.uploads import UploadCore
from service.ops.sweeper import Sweeper
from service.redis.connection import connect
from service.redis.index import EntryIndex
from service.redis.intents import Intents
from service.redis.keyspace import KeySpace
from service.redis.leases import Leases
from service.redis.sessions import SessionStore
from service.storage.blobs import BlobStore
from service.storage.entries import EntryStore
from service.storage.staging import StagingArea


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
