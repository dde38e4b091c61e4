"""Locks with a lease in Redis: set-if-absent with an expiry, released only by their holder.

A holder that dies leaves its lock behind for at most one lease. Holders of
long work renew the lease while they make progress.

A lease may carry an intent: a record of the change its holder is about to make
(`<prefix>intents`, field: the lease's token), written in the same step as the locks
are taken and removed by the script that finishes the change. A record whose locks
are no longer held by its token outlived its holder: see `service/core/catalog.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator

import redis.asyncio as redis

from service.core import ports
from service.core.errors import Unavailable
from service.redis.keyspace import KeySpace

# Every script takes the lease's keys as KEYS and its token as ARGV[1]: one lease may hold several locks.
# _ACQUIRE: with an intent (ARGV[3]), the last KEY is the intents hash, not a lock.
_ACQUIRE = """
local locks = #KEYS
if ARGV[3] then locks = locks - 1 end
for i = 1, locks do
  if not redis.call('set', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    for j = 1, i - 1 do redis.call('del', KEYS[j]) end
    return 0
  end
end
if ARGV[3] then redis.call('hset', KEYS[#KEYS], ARGV[1], ARGV[3]) end
return 1
"""


def release_lua(first_key: int, token: str) -> str:
    """Lua that lets go of the locks KEYS[first_key], KEYS[first_key + 1], ... held with `token`
    (an ARGV reference): for scripts that end a lease's work and let go in the same step."""
    return f"""
for i = {first_key}, #KEYS do
  if redis.call('get', KEYS[i]) == {token} then redis.call('del', KEYS[i]) end
end
"""


_RELEASE = release_lua(1, "ARGV[1]") + "return 1\n"
# KEYS: the intents hash, then the locks.
_SETTLE = "redis.call('hdel', KEYS[1], ARGV[1])\n" + release_lua(2, "ARGV[1]") + "return 1\n"
_RENEW = """
for _, key in ipairs(KEYS) do
  if redis.call('get', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do redis.call('pexpire', key, ARGV[2]) end
return 1
"""


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task has been asked to stop, even when that request got lost.

    On Python 3.11 asyncio.wait_for, which redis-py uses for every write under its socket
    timeout, returns normally when a cancellation arrives just as the write completes: the
    cancellation is swallowed (fixed in 3.12). A loop that must end when its task is
    cancelled calls this every time round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


class Lease:
    """Locks this process holds, taken and let go together; `keys` and `token` identify them in Redis."""

    def __init__(
        self, leases: Leases, keys: tuple[str, ...], token: str, seconds: float, intent: str | None = None
    ) -> None:
        self.keys = keys
        self.token = token
        self.seconds = seconds
        self.intent = intent
        self.renewed_at = time.monotonic()
        self.released = False
        self._leases = leases

    @property
    def key(self) -> str:
        """The lock of a single-lock lease, for scripts that check it along with other state."""
        (key,) = self.keys
        return key

    @property
    def milliseconds(self) -> int:
        return int(self.seconds * 1000)

    def due(self) -> bool:
        """True once a third of the lease has gone by since it was last renewed."""
        return time.monotonic() - self.renewed_at > self.seconds / 3

    def renewed(self) -> None:
        self.renewed_at = time.monotonic()

    async def renew(self) -> bool:
        held = bool(await self._leases.renew_script(keys=list(self.keys), args=[self.token, self.milliseconds]))
        if held:
            self.renewed()
        return held

    async def release(self) -> None:
        """Let go, unless a script that ended the work let go already (see `released`).

        An intent stays: work cut short by an error may have changed the volume half-way, and
        whoever settles intents (the sweeper) finds out which half.
        """
        if not self.released:
            await self._leases.release_script(keys=list(self.keys), args=[self.token])
            self.released = True

    async def settle(self) -> None:
        """Let go and drop the intent: the work ended having changed nothing."""
        if not self.released:
            keys = [self._leases.keys.intents, *self.keys]
            await self._leases.settle_script(keys=keys, args=[self.token])
            self.released = True

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Renew the lease in the background while the server itself works (hashing, committing).

        The renewing task starts only once a third of the lease has gone by: most work is
        done long before, and then costs no task at all.
        """

        async def renew_forever() -> None:
            while True:
                await self.renew()
                stop_if_cancelled()
                await asyncio.sleep(self.seconds / 3)

        tasks: list[asyncio.Task[None]] = []
        timer = asyncio.get_running_loop().call_later(
            self.seconds / 3, lambda: tasks.append(asyncio.create_task(renew_forever()))
        )
        try:
            yield
        finally:
            timer.cancel()
            for task in tasks:
                task.cancel()
                # Not `await task` under suppress(CancelledError): that would also swallow a cancellation
                # of this task arriving meanwhile (the sweeper would then never stop at shutdown).
                await asyncio.wait([task])
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error


def own(lease: ports.Lease) -> Lease:
    """`lease` as one of these Redis leases: a script that checks or lets go of a lease in the same
    step as other state needs its keys, so a store takes only the leases of its own locker."""
    if not isinstance(lease, Lease):
        raise TypeError(f"not a Redis lease: {lease!r}")
    return lease


class Leases:
    def __init__(self, client: redis.Redis, keys: KeySpace, seconds: float) -> None:
        self.client = client
        self.keys = keys
        self.seconds = seconds
        # A holder's token must only differ from every other holder's: a random part per process and a
        # counter (no system call per lock, as a fresh random token would take).
        self._token_prefix = secrets.token_hex(8)
        self._token_count = itertools.count()
        self.acquire_script = client.register_script(_ACQUIRE)
        self.release_script = client.register_script(_RELEASE)
        self.renew_script = client.register_script(_RENEW)
        self.settle_script = client.register_script(_SETTLE)

    def token(self) -> str:
        return f"{self._token_prefix}-{next(self._token_count)}"

    def new(self, key: str, token: str, seconds: float | None = None) -> Lease:
        return Lease(self, (key,), token, seconds or self.seconds)

    async def acquire(self, *names: str, seconds: float | None = None, intent: str | None = None) -> Lease | None:
        """Take the locks `names`, all or none, if they are free, without waiting; with `intent`
        (JSON), record it under the lease's token in the same step."""
        keys = tuple(self.keys.lock(name) for name in names)
        lease = Lease(self, keys, self.token(), seconds or self.seconds, intent)
        args: list[str | int] = [lease.token, lease.milliseconds]
        if intent is not None:
            keys, args = (*keys, self.keys.intents), [*args, intent]
        if await self.acquire_script(keys=list(keys), args=args):
            return lease
        return None

    @contextlib.asynccontextmanager
    async def hold(self, *names: str, wait: float | None = None, intent: str | None = None) -> AsyncIterator[Lease]:
        """Hold the locks `names` for a short critical section, waiting up to `wait` seconds for them.

        Taking several at once, all or none, cannot deadlock with another holder of some of them.
        """
        deadline = time.monotonic() + (self.seconds if wait is None else wait)
        delay = 0.002
        while (lease := await self.acquire(*names, intent=intent)) is None:
            if time.monotonic() > deadline:
                raise Unavailable(f"timed out waiting for the locks {', '.join(names)}; try again")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            async with lease.kept_alive():
                yield lease
        finally:
            await lease.release()
