"""Fixtures for the fast tests: the app on an in-process fakeredis, called through httpx's ASGI transport.

The modules whose tests drive the Lua scripts (service/redis/*) mark themselves `on_both_redises`:
their tests run once on fakeredis and once on a real redis-server, the one the integration tests
share (`shared_redis_url`), under a key prefix of the test's own, since that server is never flushed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import fakeredis
import httpx
import pytest
from integration.harness import RedisServer, redis_server_binary, unavailable
from redis import Redis as SyncRedis
from redis import RedisError
from redis.asyncio import Redis
from s3server import S3Server
from starlette.applications import Starlette

from service.config import Settings
from service.http.app import create_app

BASE_URL = "http://files.test"
FAKEREDIS, REDIS_SERVER = "fakeredis", "redis-server"
on_both_redises = pytest.mark.parametrize("redis_kind", [FAKEREDIS, REDIS_SERVER], indirect=True)


@pytest.fixture(scope="session")
def shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """FILES_TEST_REDIS_URL, else a redis-server started for the session; tests on it never flush it."""
    url = os.environ.get("FILES_TEST_REDIS_URL")
    if url:
        try:
            with contextlib.closing(SyncRedis.from_url(url, socket_timeout=5)) as client:
                client.ping()
        except RedisError as error:
            unavailable(f"FILES_TEST_REDIS_URL={url} does not answer: {error}")
        yield url
        return
    if redis_server_binary() is None:
        unavailable("no real Redis: FILES_TEST_REDIS_URL is unset and redis-server is not on PATH")
    directory = tmp_path_factory.mktemp("shared-redis")
    server = RedisServer(directory, directory / "redis.log")
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server for the session; each test makes its own bucket."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "in_memory: the app keeps blobs and staged uploads in memory (tests that look at no file on disk)"
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """The Redis a test runs on: fakeredis, unless its module runs on both (`on_both_redises`)."""
    return getattr(request, "param", FAKEREDIS)


@pytest.fixture
def settings(tmp_path: Path, redis_kind: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        redis_prefix="files:" if redis_kind == FAKEREDIS else f"files-test:{uuid.uuid4().hex}:",
        lock_lease_seconds=2.0,
        sweep_interval_seconds=30.0,
        blob_grace_seconds=0.0,
        writer_processes=0,  # threads: tests monkeypatch the commit's steps (test_writers.py has processes)
    )


@pytest.fixture
def redis_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def connect_redis(request: pytest.FixtureRequest, redis_kind: str) -> Callable[[], Redis]:
    """`connect_redis()`: a new client of the test's Redis, as each process has its own.

    A plain fixture on fakeredis, so that tests which are not async (driving the app through a
    portal, say) can use it; the real server's clients need an async test to be closed in.
    """
    if redis_kind == FAKEREDIS:
        server = request.getfixturevalue("redis_server")
        return lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    connect: Callable[[], Redis] = request.getfixturevalue("real_redis_clients")
    return connect


@pytest.fixture
async def real_redis_clients(shared_redis_url: str, settings: Settings) -> AsyncIterator[Callable[[], Redis]]:
    """Clients of the shared real redis-server; the test's keys are deleted at its end, every client closed."""
    clients: list[Redis] = []

    def connect() -> Redis:
        clients.append(Redis.from_url(shared_redis_url, decode_responses=True))
        return clients[-1]

    try:
        yield connect
    finally:
        cleaner = connect()
        async for key in cleaner.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
            await cleaner.delete(key)
        for client in clients:
            await client.aclose()


@pytest.fixture
def redis(connect_redis: Callable[[], Redis]) -> Redis:
    """The same Redis the app uses, for looking at (or losing) its keys."""
    return connect_redis()


@pytest.fixture
def make_app(
    settings: Settings, connect_redis: Callable[[], Redis], request: pytest.FixtureRequest
) -> Callable[..., Starlette]:
    """Build an app (a 'process') on the test's Redis; keyword arguments replace settings fields.

    Blobs and staged uploads are files in the data directory, or, for tests marked `in_memory`,
    kept in memory (service/storage/memory.py).
    """
    in_memory = request.node.get_closest_marker("in_memory") is not None

    def make(**changes: object) -> Starlette:
        return create_app(settings.model_copy(update=changes), client=connect_redis(), in_memory=in_memory)

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
