"""Fixtures for the fast tests: the app on an in-process fakeredis, called through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import fakeredis
import httpx
import pytest
from starlette.applications import Starlette

from service.config import Settings
from service.http.app import create_app

BASE_URL = "http://files.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        lock_lease_seconds=2.0,
        sweep_interval_seconds=30.0,
        blob_grace_seconds=0.0,
    )


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def redis(redis_server: fakeredis.FakeServer) -> fakeredis.FakeAsyncRedis:
    """The same fake Redis the app uses, for looking at (or losing) its keys."""
    return fakeredis.FakeAsyncRedis(server=redis_server, decode_responses=True)


@pytest.fixture
def make_app(settings: Settings, redis_server: fakeredis.FakeServer) -> Callable[..., Starlette]:
    """Build an app (a 'process') on the shared fake Redis; keyword arguments replace settings fields."""

    def make(**changes: object) -> Starlette:
        client = fakeredis.FakeAsyncRedis(server=redis_server, decode_responses=True)
        return create_app(settings.model_copy(update=changes), client=client)

    return make


def http_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


@pytest.fixture
async def app(make_app) -> Starlette:
    return make_app()


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(app) as client:
        yield client
