"""The ASGI application: the routes in front of the services, and the sweeper (and webhooks) in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route

from service.config import Settings
from service.http import resumable, tus
from service.http.errors import HANDLERS
from service.http.limits import HeaderLimit
from service.http.observe import RequestObserver
from service.http.openai import OpenAIFilesAPI, not_found_route
from service.http.openai_uploads import OpenAIUploadsAPI
from service.http.resumable import ResumableAPI
from service.http.routes import FilesAPI
from service.http.static import console_routes, docs_routes
from service.http.tus import TusAPI
from service.ops.dirlock import hold_for_service
from service.ops.tuning import tune_allocator, widen_io_threads
from service.services import Services

log = logging.getLogger("files.service")

SETTLE_SECONDS = 5.0
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Content-Type",
    "Range",
    "If-None-Match",
    "If-Range",
    "X-Request-ID",
    *tus.REQUEST_HEADERS,
    *resumable.REQUEST_HEADERS,
]
CORS_EXPOSED_HEADERS = [
    "ETag",
    "Content-Range",
    "Content-Length",
    "Accept-Ranges",
    "X-Request-ID",
    *tus.EXPOSED_HEADERS,
    *resumable.EXPOSED_HEADERS,
]


def create_app(
    settings: Settings | None = None, client: redis.Redis | None = None, in_memory: bool = False
) -> Starlette:
    """The app of one service process; a caller that passes its own Redis `client` (tests) minds the data
    directory. With `in_memory` (tests), blobs and staged uploads are kept in memory."""
    settings = settings or Settings.from_env()
    # Claimed before anything else, so that a service that may not share it stops with one clear line.
    dir_lock = hold_for_service(settings.data_dir, embedded=settings.redis_url is None) if client is None else None
    services = Services.build(settings, client, in_memory)
    api = FilesAPI(services)
    # The draft's routes first: they take the requests to /tus/ in the draft, tus's all the others.
    openai = [*OpenAIFilesAPI(services).routes(), *OpenAIUploadsAPI(services).routes()]
    routes = [
        *api.routes(),
        *ResumableAPI(services).routes(),
        *TusAPI(services).routes(),
        *openai,
        not_found_route(openai),
        *docs_routes(),
        *console_routes(),
    ]
    templates: dict[object, str] = {route.endpoint: route.path for route in routes if isinstance(route, Route)}
    templates |= {route.app: f"{route.path}/{{path}}" for route in routes if isinstance(route, Mount)}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("serving files from %s", services.settings.data_dir.resolve())
        if services.auth.open:
            log.warning("FILES_AUTH_TOKENS_FILE is unset: the service is open, every request may do everything")
        tune_allocator()
        widen_io_threads()
        tasks = [asyncio.create_task(services.sweeper.run_forever())]
        if services.webhooks is not None:
            tasks.append(asyncio.create_task(services.webhooks.run_forever()))
        try:
            yield
        finally:
            # Uploads that shutdown cut off record what arrived and release their locks; Redis must stay open till then.
            await services.core.settle(SETTLE_SECONDS)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.client.aclose()
            if services.writers is not None:
                await services.writers.close()
            if dir_lock is not None:
                dir_lock.release()

    middleware = [
        Middleware(
            RequestObserver,
            route_of=lambda scope: templates.get(scope.get("endpoint")),
            upload_route=templates[api.upload_content],
            download_route=templates[api.download],
        ),
    ]
    if settings.cors_origins:
        # Outside the header limit, so that a browser sees its 431 too.
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=CORS_REQUEST_HEADERS,
                expose_headers=CORS_EXPOSED_HEADERS,
                max_age=600,
            )
        )
    middleware.append(Middleware(HeaderLimit, max_bytes=settings.max_header_bytes))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
    app.state.services = services
    return app
