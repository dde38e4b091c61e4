"""FILES_REDIS_URL's forms, and connections that outlive a broken one: what a user sees of the Redis client."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from apihelpers import assert_error, upload
from conftest import http_client
from integration.harness import redis_server_binary, unavailable, wait_for
from redis.asyncio import Redis
from redis.exceptions import ReadOnlyError

from service.config import ConfigError, Settings
from service.http.app import create_app
from service.redis.connection import connect
from service.redisurl import ClusterAddress, SentinelAddress, parse


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("rediss://:secret@redis.example:6380/2", "rediss://:secret@redis.example:6380/2"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        (
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/files",
            SentinelAddress((("10.0.0.1", 26379), ("10.0.0.2", 26380)), "files"),
        ),
        (
            "redis+sentinel://:p%40ss@sentinel-a,[::1]:5000/files/3",
            SentinelAddress((("sentinel-a", 26379), ("::1", 5000)), "files", db=3, password="p@ss"),
        ),
        ("REDIS+SENTINEL://s:1/m/", SentinelAddress((("s", 1),), "m")),
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            ClusterAddress((("10.0.0.1", 7000), ("10.0.0.2", 7001))),
        ),
        (
            "redis+cluster://files:p%40ss@node-a,[::1]:7000/",
            ClusterAddress((("node-a", 6379), ("::1", 7000)), username="files", password="p@ss"),
        ),
    ],
)
def test_the_url_forms_of_the_contract(url: str, expected: str | SentinelAddress | ClusterAddress) -> None:
    assert parse(url) == expected
    assert Settings.from_env({"FILES_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:6379", "expected a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL"),
        ("http://127.0.0.1:6379", "expected a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL"),
        ("redis://127.0.0.1:port/0", "Port could not be cast to integer value as 'port'"),
        ("redis://127.0.0.1/zero", "the database (the URL's path) must be a number"),
        ("redis+sentinel://s1:26379", "expected redis+sentinel://host:port[,host:port...]/<master name>[/<db>]"),
        ("redis+sentinel:///files", "expected redis+sentinel://host:port[,host:port...]/<master name>[/<db>]"),
        ("redis+sentinel://s1/files/0/1", "expected redis+sentinel://host:port[,host:port...]/<master name>[/<db>]"),
        ("redis+sentinel://s1/files/x", "the database must be a number"),
        ("redis+sentinel://s1:0/files", "'s1:0' is not a host:port"),
        ("redis+sentinel://s1,:26379/files", "':26379' is not a host:port"),
        ("redis+cluster://", "expected redis+cluster://host:port[,host:port...]"),
        ("redis+cluster://n1:7000/0", "expected redis+cluster://host:port[,host:port...] (a cluster has no databases)"),
        ("redis+cluster://n1:7000,n2:x", "'n2:x' is not a host:port (redis+cluster://host:port[,host:port...])"),
    ],
)
def test_a_malformed_url_stops_the_service_with_one_line(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"FILES_REDIS_URL": url})
    assert str(raised.value).startswith(f"FILES_REDIS_URL: {message}")
    assert str(raised.value).endswith(f", got {url!r}")


class DemotedMaster(fakeredis.FakeAsyncRedis):
    """A Redis that has become a replica: every command is refused with READONLY."""

    async def execute_command(self, *args: object, **options: object) -> object:
        raise ReadOnlyError("You can't write against a read only replica.")

    def pipeline(self, *args: Any, **options: Any) -> Any:
        pipe = super().pipeline(*args, **options)

        async def refused(raise_on_error: bool = True) -> object:
            raise ReadOnlyError("You can't write against a read only replica.")

        pipe.execute = refused
        return pipe


@pytest.mark.anyio
async def test_a_redis_that_refuses_commands_is_503_unavailable_not_500(settings: Settings) -> None:
    app = create_app(settings, client=DemotedMaster(server=fakeredis.FakeServer(), decode_responses=True))
    async with http_client(app) as client:
        create = {"bucket": "b", "key": "k", "mime_type": "text/plain", "size": 1}
        for response in (await client.post("/v1/files", json=create), await client.get("/v1/files/b")):
            assert assert_error(response, 503)["code"] == "unavailable"


@pytest.mark.anyio
async def test_a_redis_on_a_unix_socket(settings: Settings, tmp_path: Path) -> None:
    """`unix://` works as the other forms do (its connections take no TCP keepalive)."""
    binary = redis_server_binary()
    if binary is None:
        unavailable("redis-server is not on PATH")
    socket = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(socket.exists, 10, "redis-server to open its unix socket")
        redis = connect(settings.model_copy(update={"redis_url": f"unix://{socket}"}))
        try:
            async with http_client(create_app(settings, client=redis)) as client:
                await upload(client, "b", "over-a-socket", b"bytes")
                assert (await client.get("/v1/files/b/over-a-socket:content")).content == b"bytes"
        finally:
            await redis.aclose()
    finally:
        server.kill()
        server.wait()


@pytest.mark.anyio
async def test_a_connection_cut_between_requests_costs_no_request(settings: Settings, shared_redis_url: str) -> None:
    """The server drops the service's connection (a restart, a proxy's idle timeout): the next command
    reconnects and is tried again, so the next request succeeds."""
    app_settings = settings.model_copy(update={"redis_url": shared_redis_url})
    redis = connect(app_settings)
    admin = Redis.from_url(shared_redis_url, decode_responses=True)
    try:
        async with http_client(create_app(app_settings, client=redis)) as client:
            await upload(client, "b", "first", b"one")
            own = await redis.client_id()
            assert await admin.client_kill_filter(_id=own) == 1
            await upload(client, "b", "second", b"two")
            assert (await client.get("/v1/files/b")).json()["data"][1]["key"] == "second"
    finally:
        await redis.aclose()
        async for key in admin.scan_iter(match=f"{settings.redis_prefix}*"):
            await admin.delete(key)
        await admin.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "error",
    [
        AttributeError("'NoneType' object has no attribute 'writelines'"),
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),
    ],
)
async def test_a_cluster_client_failing_inside_itself_while_the_cluster_changes_is_a_connection_error(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """redis-py's cluster client can fail from inside itself while a primary is replaced (a connection
    closed under a command: an AttributeError, or uvloop's RuntimeError for the write): that is Redis
    unavailable for a moment (503), not a 500."""
    from redis.asyncio.cluster import ClusterPipeline, RedisCluster
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def closed_under(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(RedisCluster, "execute_command", closed_under)
    monkeypatch.setattr(ClusterPipeline, "execute", closed_under)
    client = connect(Settings.from_env({"FILES_REDIS_URL": "redis+cluster://127.0.0.1:1"}))
    with pytest.raises(RedisConnectionError, match="the cluster changed under the command"):
        await client.get("k")
    pipe = client.pipeline(transaction=False)
    pipe.get("k")
    with pytest.raises(RedisConnectionError, match="the cluster changed under the command"):
        await pipe.execute()
    await client.aclose()


@pytest.mark.anyio
async def test_another_runtime_error_of_the_cluster_client_is_not_taken_for_a_closed_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from redis.asyncio.cluster import RedisCluster

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(RedisCluster, "execute_command", broken)
    client = connect(Settings.from_env({"FILES_REDIS_URL": "redis+cluster://127.0.0.1:1"}))
    with pytest.raises(RuntimeError, match="a bug"):
        await client.get("k")
    await client.aclose()
