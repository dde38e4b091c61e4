"""Intents: what a catalog change in flight is about to do, kept in Redis until it is done.

A commit or a delete records its intent in the same script that takes its entry's lock (in
the bucket's hash slot: `intents:{bucket:<b>}`), and the script that finishes the change in
the index drops it: no round trip of its own. An intent whose locks are no longer held by
its token outlived the process that made it (killed half-way); the sweeper settles it
(`Catalog.settle_stranded`), walking the list of buckets (a bucket is listed before its
first intent is recorded).
"""

from __future__ import annotations

import redis.asyncio as redis

from service.core.model import Intent
from service.redis import references
from service.redis.buckets import Buckets
from service.redis.keyspace import KeySpace
from service.redis.references import reference


class Intents:
    """The intents port on Redis: per bucket one hash, token -> intent JSON."""

    def __init__(self, client: redis.Redis, keys: KeySpace, buckets: Buckets) -> None:
        self.client = client
        self.keys = keys
        self.buckets = buckets

    async def stranded(self) -> list[tuple[str, Intent]]:
        """(token, intent) of every intent whose entry lock its token no longer holds."""
        buckets = await self.buckets.all()
        async with self.client.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.hgetall(self.keys.intents(bucket))
            recorded: list[dict[str, str]] = await pipe.execute()
        intents = [(token, Intent.model_validate_json(value)) for found in recorded for token, value in found.items()]
        if not intents:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for _, intent in intents:
                pipe.get(self.keys.lock(intent.locks()[-1]))
            holders = await pipe.execute()
        return [(token, intent) for (token, intent), holder in zip(intents, holders, strict=True) if holder != token]

    async def forget(self, token: str, intent: Intent) -> bool:
        """Drop the intent and a commit's claim on its content (the settling made the index agree with
        the volume, adding a reference of its own for an entry it counted in); False when the intent is
        gone already. A commit that finished keeps its claim's member as its entry's reference: ending
        that member for an intent read just before the commit finished would leave the entry unreferenced."""
        if not await self.client.hexists(self.keys.intents(intent.bucket), token):
            return False
        if intent.digest is not None:
            async with self.client.pipeline(transaction=False) as pipe:
                member = reference(intent.bucket, intent.key, token)
                references.end(pipe, self.keys, intent.digest, intent.bucket, member)
                await pipe.execute()
        await self.client.hdel(self.keys.intents(intent.bucket), token)
        return True
