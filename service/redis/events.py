"""The events stream (`<prefix>events`): read it whole, follow it, or share it through a consumer group.

The index's scripts append the events (service/redis/index.py); this module only reads them.
An event here is a dict of the contract's fields (`bytes` an int, `time` a float) and its stream `id`.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

import redis.asyncio as redis

PAGE = 100

# KEYS: the stream. ARGV: group, consumer, id. Resets the idle time of an event still pending with this
# consumer (so no other one claims it while it is being delivered); 0 when another one has claimed it.
_TOUCH = """
local pending = redis.call('xpending', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 or pending[1][2] ~= ARGV[2] then return 0 end
redis.call('xclaim', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

Event = dict[str, Any]


def event(event_id: str, fields: dict[str, str]) -> Event:
    """A stream entry as JSON-ready data: the fields with their types, and the entry's id."""
    return {
        "id": event_id,
        **fields,
        "bytes": int(fields["bytes"]),
        "time": float(fields["time"]),
    }


def _events(answer: Any) -> list[Event]:
    """The events of an XREAD or XREADGROUP answer (one stream); an entry trimmed meanwhile has no fields."""
    return [event(event_id, fields) for _, entries in answer for event_id, fields in entries if fields]


def consumer_name() -> str:
    """A name no other reader of a group has: the host, the process, and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class EventStream:
    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key
        self._touch = client.register_script(_TOUCH)

    async def after(self, last_id: str, block_ms: int | None = None) -> list[Event]:
        """Up to a page of events after `last_id` ('0' for the start); with `block_ms`, wait that long for one."""
        return _events(await self.client.xread({self.key: last_id}, count=PAGE, block=block_ms))

    async def join(self, group: str) -> None:
        """Create the consumer group, reading from the start of the stream, unless it exists."""
        try:
            await self.client.xgroup_create(self.key, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def take(self, group: str, consumer: str, block_ms: int | None = None) -> list[Event]:
        """Up to a page of events no reader of the group has been given yet; they are pending until acked."""
        return _events(await self.client.xreadgroup(group, consumer, {self.key: ">"}, count=PAGE, block=block_ms))

    async def claim(self, group: str, consumer: str, idle_seconds: float) -> list[Event]:
        """Up to a page of events given to another reader that has not acked or touched them for that long
        (its process died): they become this consumer's."""
        answer = await self.client.xautoclaim(
            self.key, group, consumer, min_idle_time=int(idle_seconds * 1000), start_id="0-0", count=PAGE
        )
        return [event(event_id, fields) for event_id, fields in answer[1] if fields]

    async def touch(self, group: str, consumer: str, event_id: str) -> bool:
        """Keep an event being worked on from being claimed; False when another reader has it now."""
        return bool(await self._touch(keys=[self.key], args=[group, consumer, event_id]))

    async def ack(self, group: str, *event_ids: str) -> None:
        if event_ids:
            await self.client.xack(self.key, group, *event_ids)
