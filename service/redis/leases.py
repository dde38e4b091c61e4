"""Locks with a lease in Redis: set-if-absent with an expiry, released only by their holder.

A holder that dies leaves its lock behind for at most one lease. Holders of
long work renew the lease while they make progress.

A lease may carry an intent: a record of the change its holder is about to make
(`intents:{bucket:<b>}`, field: the lease's token), written in the same step as the
entry's lock is taken and removed by the script that finishes the change in the index;
for a commit, also a claim on its content (the entry's member of `refs:{blob:<d>}`,
taken with the blob's lock), so that nothing frees the blob while the change is in
flight or stranded. A record whose locks are no longer held by its token outlived its
holder: see `service/core/catalog.py`.

The locks of one lease may lie in several hash slots (a blob's and an entry's): each
slot's are taken in one script, the slots one after the other, the claim's last, and
what was taken is given back when a later slot's lock is busy. Nothing waits while it
holds a lock, so this cannot deadlock either.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as redis

from service.core import ports
from service.core.errors import Unavailable
from service.core.model import Intent
from service.redis import references
from service.redis.buckets import Buckets
from service.redis.keyspace import KeySpace, by_slot, key_slot
from service.redis.references import reference
from service.redis.together import call

# KEYS: ARGV[3] locks, then the records' keys. ARGV: token, lease ms, the number of locks, then a kind and a
# value per record: 'intent' (HSET token value, the intent's JSON) or 'claim' (SADD value, the entry's member).
_ACQUIRE = """
local locks = tonumber(ARGV[3])
for i = 1, locks do
  if not redis.call('set', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    for j = 1, i - 1 do redis.call('del', KEYS[j]) end
    return 0
  end
end
for i = locks + 1, #KEYS do
  local kind, value = ARGV[2 + 2 * (i - locks)], ARGV[3 + 2 * (i - locks)]
  if kind == 'intent' then redis.call('hset', KEYS[i], ARGV[1], value) else redis.call('sadd', KEYS[i], value) end
end
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
# KEYS: the intents hash, then the locks (of its slot).
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
        self,
        leases: Leases,
        keys: tuple[str, ...],
        token: str,
        seconds: float,
        intents: str | None = None,
        claim: tuple[str, str, str] | None = None,
    ) -> None:
        self.keys = keys
        self.token = token
        self.seconds = seconds
        self.intents = intents  # the hash holding this lease's intent, if it has one
        self.claim = claim  # (digest, bucket, member) of a commit's claim on its content, if it has one
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
        for group in by_slot(self.keys):
            if not await self._leases.renew_script(keys=group, args=[self.token, self.milliseconds]):
                return False
        self.renewed()
        return True

    async def release(self) -> None:
        """Let go, unless a script that ended the work let go already (see `released`).

        An intent stays: work cut short by an error may have changed the volume half-way, and
        whoever settles intents (the sweeper) finds out which half.
        """
        if not self.released:
            await self.release_except(())
            self.released = True

    async def release_except(self, gone: Iterable[str]) -> None:
        """Let go of the locks but those in `gone` (let go of by a script that ended the work)."""
        for group in by_slot(key for key in self.keys if key not in set(gone)):
            await self._leases.release_script(keys=group, args=[self.token])

    def release_on(self, pipe: Any, gone: Iterable[str]) -> None:
        """As `release_except`, queued on `pipe`, with other work that need not wait for it; the
        caller marks the lease `released` once the pipeline ran."""
        for group in by_slot(key for key in self.keys if key not in set(gone)):
            call(pipe, self._leases.release_script, group, [self.token])

    async def settle(self) -> None:
        """Let go and drop the intent and the claim: the work ended having changed nothing."""
        if not self.released:
            await self._leases.let_go(self.token, self.keys, self.intents)
            self.released = True
            if self.claim is not None:
                async with self._leases.client.pipeline(transaction=False) as pipe:
                    references.end(pipe, self._leases.keys, *self.claim)
                    await pipe.execute()

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
        self.buckets = Buckets(client, keys)
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

    async def acquire(self, *names: str, seconds: float | None = None, intent: Intent | None = None) -> Lease | None:
        """Take the locks `names`, all or none, if they are free, without waiting; with `intent`, record
        it under the lease's token (and a commit's claim on its content) in the same steps."""
        locks = tuple(self.keys.lock(name) for name in names)
        records: list[tuple[str, str, str]] = []
        intents = None
        claim: tuple[str, str, str] | None = None
        lease_token = self.token()
        if intent is not None:
            # Listed before its intent exists, so that whoever looks for stranded intents finds the bucket.
            await self.buckets.register(intent.bucket)
            intents = self.keys.intents(intent.bucket)
            records.append((intents, "intent", intent.model_dump_json()))
            if intent.digest is not None:
                member = reference(intent.bucket, intent.key, lease_token)
                records.append((self.keys.refs(intent.digest, intent.bucket), "claim", member))
                records.append((self.keys.holders(intent.digest), "claim", intent.bucket))
                claim = (intent.digest, intent.bucket, member)
        lease = Lease(self, locks, lease_token, seconds or self.seconds, intents, claim)
        taken: list[str] = []
        for step in _steps(locks, records):
            step_locks = [key for key in step if key in locks]
            step_records = [record for record in records if record[0] in step]
            arguments: list[str | int] = [lease.token, lease.milliseconds, len(step_locks)]
            for _, kind, value in step_records:
                arguments += [kind, value]
            if not await self.acquire_script(keys=step_locks + [key for key, _, _ in step_records], args=arguments):
                await self.let_go(lease.token, tuple(taken), intents)
                return None
            taken += step_locks
        return lease

    async def let_go(self, token: str, locks: tuple[str, ...], intents: str | None) -> None:
        """Let go of `locks` held with `token` and drop the intent recorded under it in `intents`."""
        if intents is not None:
            await self.settle_script(
                keys=[intents, *(key for key in locks if key_slot(key) == key_slot(intents))], args=[token]
            )
        for group in by_slot(key for key in locks if intents is None or key_slot(key) != key_slot(intents)):
            await self.release_script(keys=group, args=[token])

    @contextlib.asynccontextmanager
    async def hold(self, *names: str, wait: float | None = None, intent: Intent | None = None) -> AsyncIterator[Lease]:
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


def _steps(locks: tuple[str, ...], records: list[tuple[str, str, str]]) -> list[list[str]]:
    """The keys of an acquisition, one list per hash slot, the slot of a claim last: the step that
    nothing undoes, so that a busy lock gives back only locks and an intent."""
    steps = by_slot([*locks, *(key for key, _, _ in records)])
    claims = {key_slot(key) for key, kind, _ in records if kind == "claim"}
    return sorted(steps, key=lambda step: key_slot(step[0]) in claims)
