"""The Redis client: a server from FILES_REDIS_URL (plain, through Sentinels, or a Cluster), or an in-process stand-in.

A real server's connections ride out a restart or a failover of a few seconds: a command that
meets a broken connection, a timeout or a Redis still loading its data is tried again on a new
connection (to the master the Sentinels name now, or to the node a cluster now serves the key's
slot from), with waits doubling from 0.1 s to 1 s, about
3 s in all. Longer than that, the request fails with 503 and the client tries again; the next
request reconnects. Idle pooled connections are checked (PING) before use after a while.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError, TimeoutError

from service.config import Settings
from service.redisurl import ClusterAddress, SentinelAddress, parse

log = logging.getLogger("files.service")

RETRIES = 6
HEALTH_CHECK_SECONDS = 10
CONNECT_TIMEOUT_SECONDS = 2.0
# Longer than any one command of the service takes (the longest: a page of 1000 entries, a rebuild batch).
REPLY_TIMEOUT_SECONDS = 5.0
SENTINEL_TIMEOUT_SECONDS = 1.0


def retry() -> Retry:
    # Jitter, so that the workers of a fleet do not all reconnect in the same instant.
    return Retry(
        ExponentialWithJitterBackoff(base=0.05, cap=1.0), RETRIES, (ConnectionError, TimeoutError, BusyLoadingError)
    )


def connection_options(tcp: bool = True) -> dict[str, Any]:
    """The options of every connection; keepalive only over TCP (a unix socket's connection takes none)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "retry": retry(),
        "health_check_interval": HEALTH_CHECK_SECONDS,
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": REPLY_TIMEOUT_SECONDS,
    }
    if tcp:
        options["socket_keepalive"] = True
    return options


def connect(settings: Settings) -> redis.Redis:
    if settings.redis_url:
        address = parse(settings.redis_url)
        if isinstance(address, SentinelAddress):
            return through_sentinels(address)
        if isinstance(address, ClusterAddress):
            return cluster(address)
        return redis.from_url(address, **connection_options(tcp=not address.lower().startswith("unix:")))
    import fakeredis

    log.warning(
        "FILES_REDIS_URL is unset: using an embedded in-process Redis stand-in (fakeredis); "
        "upload sessions live in this process only and are lost when it stops"
    )
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)


def through_sentinels(address: SentinelAddress) -> redis.Redis:
    """A client of the master the Sentinels name: each new connection asks them where it is now, and one
    still open to a demoted master fails (READONLY) and reconnects. The master's command retries take
    over when every Sentinel is out of reach, so one that is down is skipped at once."""
    sentinels = Sentinel(
        address.sentinels,
        sentinel_kwargs={
            "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
            "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
            "retry": Retry(NoBackoff(), 0),
        },
        **connection_options(),
    )
    return sentinels.master_for(address.master, db=address.db, username=address.username, password=address.password)


def cluster(address: ClusterAddress) -> redis.Redis:
    """A client of a Redis Cluster: it learns the slots' nodes from any node named, sends each command
    to the node of its keys' slot, and follows MOVED replies and failovers (the retries above apply
    to each node's connections; the client itself also tries again after reloading the slot map).

    Typed as a plain client: it offers every command the service uses (every script and multi-key
    command of the service touches keys of one slot, and pipelines are never transactions).
    """
    client = _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
        username=address.username,
        password=address.password,
        **connection_options(),
    )
    return cast(redis.Redis, client)


async def replication_ids(client: redis.Redis) -> str | None:
    """The replication ids of the masters serving `client` (a cluster's: of each primary), sorted and
    joined; None when the server has none to tell (the in-process stand-in knows no INFO).

    A replica promoted to master takes a new id, so a change says that a failover happened and that
    the writes its old master acknowledged last may be lost: replication is asynchronous.
    """
    if isinstance(client, RedisCluster):
        replies = await client.info("replication", target_nodes=RedisCluster.PRIMARIES)
        infos = list(replies.values()) if all(isinstance(reply, dict) for reply in replies.values()) else [replies]
    else:
        try:
            infos = [await client.info("replication")]
        except ResponseError:
            return None
    ids = [str(info["master_replid"]) for info in infos if "master_replid" in info]
    return ",".join(sorted(ids)) if ids else None


@contextlib.contextmanager
def _closed_under_as_connection_error() -> Iterator[None]:
    """A connection closed under a command, as redis-py's cluster client lets it out while a primary is
    replaced, raised as the ConnectionError it stands for: an AttributeError from inside itself (seen
    with 8.1; redis/redis-py#3835 is one such), or uvloop's RuntimeError for a write to a transport
    closed meanwhile (a node's idle connections are not checked before use, as a plain client's pool
    checks them). Any other error passes as it is."""
    try:
        yield
    except (AttributeError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "is closed" not in str(error):
            raise
        raise ConnectionError(f"the cluster changed under the command: {error!r}") from error


class _Cluster(RedisCluster):
    """redis-py's cluster client, but for one thing: while the cluster changes (a primary dies, its replica
    takes over), it can fail with a connection closed under a command. That is the cluster being
    unavailable for a moment, so it is raised as the ConnectionError it stands for
    (`_closed_under_as_connection_error`): the request in flight gets 503, not 500."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _closed_under_as_connection_error():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        super().pipeline(transaction, shard_hint)  # what it checks (no shard hint), as RedisCluster does
        # As RedisCluster.pipeline makes its ClusterPipeline; redis-py's hints call the class abstract.
        return _Pipeline(self, transaction)  # type: ignore[abstract]


class _Pipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        with _closed_under_as_connection_error():
            return await super().execute(raise_on_error, allow_redirections)
