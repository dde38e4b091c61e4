"""Intents: what a catalog change in flight is about to do, kept in Redis until it is done.

A commit or a delete records its intent in the same script that takes its locks, and the
script that finishes the change in the index drops it: no round trip of its own. An intent
whose locks are no longer held by its token outlived the process that made it (killed
half-way); the sweeper settles it (`Catalog.settle_stranded`).
"""

from __future__ import annotations

from typing import cast

import redis.asyncio as redis

from service.core.model import Intent
from service.redis.keyspace import KeySpace


class Intents:
    """The intents port on Redis: one hash, token -> intent JSON."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys

    async def stranded(self) -> list[tuple[str, Intent]]:
        """(token, intent) of every intent whose entry lock its token no longer holds."""
        # The client decodes responses (connection.py), which redis-py's hints cannot know.
        recorded = cast(dict[str, str], await self.client.hgetall(self.keys.intents))
        if not recorded:
            return []
        intents = [(token, Intent.model_validate_json(value)) for token, value in recorded.items()]
        holders = await self.client.mget([self.keys.lock(intent.locks()[-1]) for _, intent in intents])
        return [(token, intent) for (token, intent), holder in zip(intents, holders, strict=True) if holder != token]

    async def forget(self, token: str) -> None:
        await self.client.hdel(self.keys.intents, token)
