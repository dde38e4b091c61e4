"""The Redis client: a real server from FILES_REDIS_URL (plain or through Sentinels), or an in-process stand-in.

A real server's connections ride out a restart or a failover of a few seconds: a command that
meets a broken connection, a timeout or a Redis still loading its data is tried again on a new
connection (to the master the Sentinels name now), with waits doubling from 0.1 s to 1 s, about
3 s in all. Longer than that, the request fails with 503 and the client tries again; the next
request reconnects. Idle pooled connections are checked (PING) before use after a while.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError

from service.config import Settings
from service.redisurl import SentinelAddress, parse

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
