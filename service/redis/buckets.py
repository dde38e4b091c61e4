"""The list of buckets (`<prefix>index:buckets`): every bucket that has held a change, kept whole.

One key for all buckets, so it is written rarely: a bucket is registered before its first
intent (whoever settles intents and outboxes walks this list), and a process remembers for a
minute which ones it registered. A bucket that empties stays in the list (taking it out would
race with a commit registering it again); the listing of buckets leaves out the empty ones.
"""

from __future__ import annotations

import time
from typing import cast

import redis.asyncio as redis

from service.redis.keyspace import KeySpace

# Registered again after this long, in case the list lost it (a failover that dropped the write).
REMEMBER_SECONDS = 60.0


class Buckets:
    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        self._registered: dict[str, float] = {}

    async def register(self, *buckets: str) -> None:
        now = time.monotonic()
        new = [bucket for bucket in buckets if self._registered.get(bucket, 0.0) < now]
        if new:
            await self.client.zadd(self.keys.buckets, dict.fromkeys(new, 0))
            for bucket in new:
                self._registered[bucket] = now + REMEMBER_SECONDS

    async def all(self) -> list[str]:
        """Every bucket registered, in order, the empty ones too."""
        # The client decodes responses (connection.py), which redis-py's hints cannot know.
        return cast(list[str], await self.client.zrange(self.keys.buckets, 0, -1))

    def forget(self) -> None:
        """Register every bucket anew (Redis lost the list)."""
        self._registered.clear()
