"""`files-service events`: the events stream as JSON lines, whole, followed, or through a consumer group."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as redis

from service.config import ConfigError, Settings
from service.redis.connection import connect
from service.redis.events import Event, EventStream, consumer_name
from service.redis.keyspace import KeySpace

# Well within the connection's reply timeout (service/redis/connection.py), which a quiet stream's
# blocked read would otherwise reach.
FOLLOW_BLOCK_MS = 2000
RETRY_SECONDS = 1.0
T = TypeVar("T")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    command = commands.add_parser(
        "events",
        help="print the events stream as JSON lines",
        description="Print the catalog's events (file.created, file.deleted) as JSON lines, oldest first, "
        "and exit. Reads FILES_REDIS_URL and FILES_REDIS_PREFIX.",
    )
    command.add_argument("--follow", action="store_true", help="keep printing new events as they come")
    command.add_argument(
        "--group",
        metavar="G",
        help="read through the consumer group G (created if missing, from the start of the stream), "
        "acking what is printed: the readers of one group share the events",
    )
    command.set_defaults(handler=print_events)


def print_events(arguments: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if settings.redis_url is None:
        raise ConfigError(
            "events need a shared Redis: set FILES_REDIS_URL (the embedded stand-in lives inside the service's process)"
        )
    client = connect(settings)
    stream = EventStream(client, KeySpace(settings.redis_prefix).events)
    reading = _group(stream, arguments.group, arguments.follow) if arguments.group else _all(stream, arguments.follow)
    try:
        asyncio.run(_closing(client, reading))
    except KeyboardInterrupt:
        pass
    return 0


async def _closing(client: redis.Redis, reading: Coroutine[Any, Any, None]) -> None:
    try:
        await reading
    finally:
        await client.aclose()


async def _all(stream: EventStream, follow: bool) -> None:
    last_id = "0"
    while True:
        events = await _read(follow, stream.after, last_id, FOLLOW_BLOCK_MS if follow else None)
        if not events and not follow:
            return
        _print(events)
        last_id = events[-1]["id"] if events else last_id


async def _group(stream: EventStream, group: str, follow: bool) -> None:
    await stream.join(group)
    consumer = consumer_name()
    while True:
        try:
            events = await _read(follow, stream.take, group, consumer, FOLLOW_BLOCK_MS if follow else None)
        except redis.ResponseError as error:
            if not follow or "NOGROUP" not in str(error):
                raise
            await _read(follow, stream.join, group)  # a Redis that came back without its data: the group anew
            continue
        if not events and not follow:
            return
        _print(events)
        await _read(follow, stream.ack, group, *(event["id"] for event in events))


async def _read(follow: bool, read: Callable[..., Awaitable[T]], *arguments: Any) -> T:
    """`read(*arguments)`; while following, tried again for as long as Redis is out of reach (a follower outlives a
    restart or a failover, as the service does), each failure said once on stderr."""
    while True:
        try:
            return await read(*arguments)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            if not follow:
                raise
            print(f"events: Redis did not answer ({error}); trying again", file=sys.stderr, flush=True)
            await asyncio.sleep(RETRY_SECONDS)


def _print(events: list[Event]) -> None:
    for event in events:
        sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()
