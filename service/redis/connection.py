"""The Redis client: a real server from FILES_REDIS_URL, or an in-process stand-in."""

from __future__ import annotations

import logging

import redis.asyncio as redis

from service.config import Settings

log = logging.getLogger("files.service")


def connect(settings: Settings) -> redis.Redis:
    if settings.redis_url:
        return redis.from_url(settings.redis_url, decode_responses=True, health_check_interval=10)
    import fakeredis

    log.warning(
        "FILES_REDIS_URL is unset: using an embedded in-process Redis stand-in (fakeredis); "
        "upload sessions live in this process only and are lost when it stops"
    )
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
