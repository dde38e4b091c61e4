"""Upload session state in Redis: one hash per session, its TTL renewed by every request.

The offset only moves through a script that checks the writer still holds the
session's lock and that the offset is where the writer found it, so two
processes can never both advance it.

A session and its lock share a hash slot; the set of a client's open sessions has its own
(the client's), so a new session is written and admitted into that set by a script that
counts it, both in one pipeline, and the set forgets the sessions no longer open only when
it is full. On a cluster the two go to their nodes at once: a sweep of that client's full set
in the instant the session is admitted and not yet written forgets it early, which lets the
client open one session more than its limit (the limit guards memory, not a promise).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import cast

import redis.asyncio as redis

from service.core import ports
from service.core.errors import LostLease, SessionBusy, SessionCompleted, SessionNotFound, TooManySessions
from service.core.model import Session
from service.redis.keyspace import KeySpace
from service.redis.leases import Lease, Leases, own
from service.redis.together import call

OPEN = "open"
COMPLETE = "complete"

# KEYS: the requester's open sessions. ARGV: max open, id, ttl s. Adds the session unless the requester has
# `max open` already; 1 added, 0 not.
_ADMIT = """
if redis.call('scard', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('sadd', KEYS[1], ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
return 1
"""

# KEYS: session, lock. ARGV: token, lease ms, ttl s.
# Returns {0} unknown, {2} complete, {-1} busy, or {1, field, value, ...} with the lock taken.
_BEGIN_WRITE = """
if redis.call('exists', KEYS[1]) == 0 then return {0} end
if redis.call('hget', KEYS[1], 'state') == 'complete' then
  redis.call('expire', KEYS[1], ARGV[3])
  return {2}
end
if not redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {-1} end
redis.call('expire', KEYS[1], ARGV[3])
local result = redis.call('hgetall', KEYS[1])
table.insert(result, 1, 1)
return result
"""

# KEYS: session, lock. ARGV: token, size. Returns 1 set, -1 lock lost, -2 session gone or its size known.
_DECLARE_SIZE = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('hget', KEYS[1], 'length_deferred') ~= '1' then return -2 end
redis.call('hset', KEYS[1], 'size', ARGV[2], 'length_deferred', '')
return 1
"""

# KEYS: session, lock. ARGV: token, metadata (JSON, or '' for none). Returns 1 set, -1 lock lost, -2 session gone.
_DECLARE_METADATA = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('exists', KEYS[1]) == 0 then return -2 end
redis.call('hset', KEYS[1], 'metadata', ARGV[2])
return 1
"""

# KEYS: session, lock. ARGV: token, size, parts (JSON). Returns 1 set, -1 lock lost, -2 session gone.
_ASSEMBLED = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('exists', KEYS[1]) == 0 then return -2 end
redis.call('hset', KEYS[1], 'size', ARGV[2], 'offset', ARGV[2], 'length_deferred', '', 'parts', ARGV[3])
return 1
"""

# KEYS: session, lock. ARGV: token, expected offset, new offset, lease ms, ttl s, new state, let go (1/0).
# Returns 1 moved, -1 lock lost, -2 session gone, -3 offset moved under us.
# The last move of a request lets go of the lock in the same step (as completing always does).
_ADVANCE = """
if redis.call('get', KEYS[2]) ~= ARGV[1] then return -1 end
local current = redis.call('hget', KEYS[1], 'offset')
if not current then return -2 end
if tonumber(current) ~= tonumber(ARGV[2]) then return -3 end
redis.call('hset', KEYS[1], 'offset', ARGV[3], 'state', ARGV[6])
if ARGV[6] == 'complete' or ARGV[7] == '1' then
  redis.call('del', KEYS[2])
else
  redis.call('pexpire', KEYS[2], ARGV[4])
end
redis.call('expire', KEYS[1], ARGV[5])
return 1
"""


def _session(session_id: str, fields: dict[str, str]) -> Session:
    return Session(
        id=session_id,
        bucket=fields["bucket"],
        key=fields["key"],
        mime_type=fields["mime_type"],
        size=int(fields["size"]),
        offset=int(fields["offset"]),
        digest=fields.get("digest") or None,
        owner=fields.get("owner") or None,
        completed=fields.get("state") == COMPLETE,
        created_at=int(fields["created_at"]),
        metadata=json.loads(fields.get("metadata") or "{}"),
        length_deferred=fields.get("length_deferred") == "1",
        part=fields.get("part") == "1",
        parts=tuple(json.loads(fields.get("parts") or "[]")),
    )


class SessionStore:
    """The session store port on Redis."""

    def __init__(self, client: redis.Redis, keys: KeySpace, leases: Leases, ttl_seconds: int) -> None:
        self.client = client
        self.keys = keys
        self.leases = leases
        self.ttl_seconds = ttl_seconds
        self._admit = client.register_script(_ADMIT)
        self._begin_write = client.register_script(_BEGIN_WRITE)
        self._advance = client.register_script(_ADVANCE)
        self._declare_size = client.register_script(_DECLARE_SIZE)
        self._declare_metadata = client.register_script(_DECLARE_METADATA)
        self._assembled = client.register_script(_ASSEMBLED)
        # The sweeps of full sets of open sessions under way in this process, by set: the requests that find
        # one full at the same moment wait for one sweep, not each run their own over the whole set.
        self._sweeps: dict[str, asyncio.Future[None]] = {}

    async def create(
        self,
        session_id: str,
        bucket: str,
        key: str,
        mime_type: str,
        size: int,
        digest: str | None,
        owner: str | None,
        requester: str,
        max_open: int,
        metadata: Mapping[str, str],
        length_deferred: bool = False,
        part: bool = False,
    ) -> Session:
        """A new session, unless `requester` already has `max_open` sessions open (TooManySessions)."""
        session = Session(
            id=session_id,
            bucket=bucket,
            key=key,
            mime_type=mime_type,
            size=size,
            offset=0,
            digest=digest,
            owner=owner,
            completed=False,
            created_at=int(time.time()),
            metadata=metadata,
            length_deferred=length_deferred,
            part=part,
        )
        mapping: dict[str, str | int] = {
            "bucket": bucket,
            "key": key,
            "mime_type": mime_type,
            "size": size,
            "offset": 0,
            "digest": digest or "",
            "owner": owner or "",
            "state": OPEN,
            "created_at": session.created_at,
            "metadata": _metadata_field(metadata),
            "length_deferred": "1" if length_deferred else "",
            "part": "1" if part else "",
        }
        name = self.keys.session(session.id)
        opened = self.keys.open_sessions(requester)
        admitting: list[str | int] = [max_open, session.id, self.ttl_seconds]

        # Two slots, one round trip: a session refused is deleted again, and one not yet admitted is
        # as good as unknown to its client, who has not been told its id.
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(name, items=[item for pair in mapping.items() for item in pair])
            pipe.expire(name, self.ttl_seconds)
            call(pipe, self._admit, [opened], admitting)
            *_, admitted = await pipe.execute()
        if not admitted and not await self._admitted_after_sweep(opened, admitting):
            await self.client.delete(name)
            raise TooManySessions(
                f"{max_open} upload sessions are open already for this client; "
                "complete or cancel some, or wait for them to expire"
            )
        return session

    async def _admitted_after_sweep(self, opened: str, admitting: list[str | int]) -> bool:
        """The requester's open sessions were `max_open`: forget those that completed or expired meanwhile
        (none ever opens again), and count the new one in if that made room."""
        sweep = self._sweeps.get(opened)
        if sweep is None:
            sweep = self._sweeps[opened] = asyncio.ensure_future(self._sweep(opened))
            sweep.add_done_callback(lambda _: self._sweeps.pop(opened, None))
        await asyncio.shield(sweep)
        return bool(await self._admit(keys=[opened], args=admitting))

    async def _sweep(self, opened: str) -> None:
        """Take the sessions no longer open out of the set `opened`."""
        listed = cast(list[str], list(await self.client.smembers(opened)))
        async with self.client.pipeline(transaction=False) as pipe:
            for listed_id in listed:
                pipe.hget(self.keys.session(listed_id), "state")
            states = await pipe.execute()
        closed = [listed_id for listed_id, state in zip(listed, states, strict=True) if state != OPEN]
        if closed:
            await self.client.srem(opened, *closed)

    async def get(self, session_id: str) -> Session:
        """The session, its TTL renewed; SessionNotFound when unknown or expired."""
        name = self.keys.session(session_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(name)
            pipe.expire(name, self.ttl_seconds)
            fields, _ = await pipe.execute()
        if not fields:
            raise SessionNotFound()
        return _session(session_id, fields)

    async def begin_write(self, session_id: str) -> tuple[Session, Lease]:
        """Lock the session for one writer, without waiting, and read its state in the same step."""
        lease = self.leases.new(self.keys.lock(ports.session_lock(session_id)), self.leases.token())
        result = await self._begin_write(
            keys=[self.keys.session(session_id), lease.key],
            args=[lease.token, lease.milliseconds, self.ttl_seconds],
        )
        status = int(result[0])
        if status == 0:
            raise SessionNotFound()
        if status == 2:
            raise SessionCompleted("this upload session has already completed")
        if status == -1:
            raise SessionBusy("another request is writing to this upload session; retry when it is done")
        fields = dict(zip(result[1::2], result[2::2], strict=True))
        return _session(session_id, fields), lease

    async def advance(
        self, session: Session, lease: ports.Lease, offset: int, complete: bool = False, release: bool = False
    ) -> Session:
        """Move the offset from `session.offset` to `offset`, renew the TTL, and renew the lease
        (or, when `complete` or `release`, let go of it: the request is done with the session)."""
        lease = own(lease)
        moved = await self._advance(
            keys=[self.keys.session(session.id), lease.key],
            args=[
                lease.token,
                session.offset,
                offset,
                lease.milliseconds,
                self.ttl_seconds,
                COMPLETE if complete else OPEN,
                1 if release else 0,
            ],
        )
        if moved == -2:
            raise SessionNotFound("the upload session expired or was cancelled while this request ran")
        if moved != 1:
            raise LostLease("its lock lease ran out" if moved == -1 else "its offset moved")
        lease.renewed()
        lease.released = complete or release
        return replace(session, offset=offset, completed=complete)

    async def declare_size(self, session: Session, lease: ports.Lease, size: int) -> Session:
        """Set the size of a session whose length was deferred; the caller holds its lease."""
        lease = own(lease)
        result = await self._declare_size(keys=[self.keys.session(session.id), lease.key], args=[lease.token, size])
        _changed(result)
        return replace(session, size=size, length_deferred=False)

    async def declare_metadata(self, session: Session, lease: ports.Lease, metadata: Mapping[str, str]) -> Session:
        """Replace the metadata of an open session; the caller holds its lease."""
        lease = own(lease)
        result = await self._declare_metadata(
            keys=[self.keys.session(session.id), lease.key], args=[lease.token, _metadata_field(metadata)]
        )
        _changed(result)
        return replace(session, metadata=dict(metadata))

    async def assembled(self, session: Session, lease: ports.Lease, size: int, parts: Sequence[str]) -> Session:
        """Record the session's content as the concatenation of `parts`, `size` bytes; the caller holds its lease."""
        lease = own(lease)
        result = await self._assembled(
            keys=[self.keys.session(session.id), lease.key], args=[lease.token, size, json.dumps(list(parts))]
        )
        _changed(result)
        return replace(session, size=size, offset=size, length_deferred=False, parts=tuple(parts))

    async def delete(self, session_id: str) -> None:
        await self.client.delete(self.keys.session(session_id))

    async def exist(self, session_ids: list[str]) -> list[bool]:
        """Which of these sessions Redis still knows."""
        async with self.client.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                pipe.exists(self.keys.session(session_id))
            return [bool(found) for found in await pipe.execute()]


def _metadata_field(metadata: Mapping[str, str]) -> str:
    """The session hash's `metadata`: JSON, or '' for none."""
    return json.dumps(dict(metadata)) if metadata else ""


def _changed(result: int) -> None:
    """Check what a script that changes a session under its lease answered: 1 done, -1 lease lost, -2 gone."""
    if result == -2:
        raise SessionNotFound("the upload session expired or was cancelled while this request ran")
    if result != 1:
        raise LostLease("its lock lease ran out")
