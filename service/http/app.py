"""The ASGI application: wires the stores, the core, the sweeper and the routes together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from blobstore import BlobStore, StagingArea
from service.catalog import Catalog
from service.config import Settings
from service.connection import connect
from service.entries import EntryStore
from service.http.errors import HANDLERS
from service.http.openapi import build_openapi
from service.http.routes import FilesAPI
from service.index import EntryIndex
from service.keyspace import KeySpace
from service.leases import Leases
from service.sessions import SessionStore
from service.sweeper import Sweeper
from service.uploads import UploadCore

log = logging.getLogger("files.service")


def create_app(settings: Settings | None = None, client: redis.Redis | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    client = client if client is not None else connect(settings)
    keys = KeySpace(settings.redis_prefix)
    leases = Leases(client, keys, settings.lock_lease_seconds)
    entries = EntryStore(settings.data_dir / "entries")
    blobs = BlobStore(settings.data_dir / "blobs")
    staging = StagingArea(settings.data_dir / "partial")
    catalog = Catalog(entries, EntryIndex(client, keys, leases, entries), blobs, leases)
    sessions = SessionStore(client, keys, leases, settings.session_ttl_seconds)
    core = UploadCore(sessions, staging, catalog, settings.max_upload_bytes)
    sweeper = Sweeper(
        leases, sessions, staging, catalog, settings.sweep_interval_seconds, settings.blob_grace_seconds
    )
    api = FilesAPI(core, catalog, settings, client.ping)
    openapi = build_openapi()

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("serving files from %s", settings.data_dir.resolve())
        task = asyncio.create_task(sweeper.run_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()

    app = Starlette(
        routes=[Route("/openapi.json", openapi_json, methods=["GET"]), *api.routes()],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.sweeper = sweeper
    return app
