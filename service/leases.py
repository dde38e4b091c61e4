"""Locks with a lease in Redis: set-if-absent with an expiry, released only by their holder.

A holder that dies leaves its lock behind for at most one lease. Holders of
long work renew the lease while they make progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import redis.asyncio as redis

from service.errors import Unavailable
from service.keyspace import KeySpace

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


class Lease:
    """A lock this process holds; `key` and `token` identify it in Redis."""

    def __init__(self, leases: Leases, key: str, token: str, seconds: float) -> None:
        self.key = key
        self.token = token
        self.seconds = seconds
        self.renewed_at = time.monotonic()
        self._leases = leases

    @property
    def milliseconds(self) -> int:
        return int(self.seconds * 1000)

    def due(self) -> bool:
        """True once a third of the lease has gone by since it was last renewed."""
        return time.monotonic() - self.renewed_at > self.seconds / 3

    def renewed(self) -> None:
        self.renewed_at = time.monotonic()

    async def renew(self) -> bool:
        held = bool(await self._leases.renew_script(keys=[self.key], args=[self.token, self.milliseconds]))
        if held:
            self.renewed()
        return held

    async def release(self) -> None:
        await self._leases.release_script(keys=[self.key], args=[self.token])

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Renew the lease in the background while the server itself works (hashing, committing)."""

        async def renew_forever() -> None:
            while True:
                await asyncio.sleep(self.seconds / 3)
                await self.renew()

        task = asyncio.create_task(renew_forever())
        try:
            yield
        finally:
            task.cancel()
            # Not `await task` under suppress(CancelledError): that would also swallow a cancellation
            # of this task arriving meanwhile (the sweeper would then never stop at shutdown).
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()


class Leases:
    def __init__(self, client: redis.Redis, keys: KeySpace, seconds: float) -> None:
        self.client = client
        self.keys = keys
        self.seconds = seconds
        self.release_script = client.register_script(_RELEASE)
        self.renew_script = client.register_script(_RENEW)

    def new(self, key: str, token: str, seconds: float | None = None) -> Lease:
        return Lease(self, key, token, seconds or self.seconds)

    async def acquire(self, name: str, seconds: float | None = None) -> Lease | None:
        """Take the lock `name` if it is free, without waiting."""
        lease = self.new(self.keys.lock(name), secrets.token_hex(16), seconds)
        if await self.client.set(lease.key, lease.token, nx=True, px=lease.milliseconds):
            return lease
        return None

    @contextlib.asynccontextmanager
    async def hold(self, name: str, wait: float | None = None) -> AsyncIterator[Lease]:
        """Hold the lock `name` for a short critical section, waiting up to `wait` seconds for it."""
        deadline = time.monotonic() + (self.seconds if wait is None else wait)
        delay = 0.002
        while (lease := await self.acquire(name)) is None:
            if time.monotonic() > deadline:
                raise Unavailable(f"timed out waiting for the lock {name!r}; try again")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            async with lease.kept_alive():
                yield lease
        finally:
            await lease.release()
