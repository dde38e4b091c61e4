"""The listing index in Redis: a cache of the entries on the volume, rebuilt when it is lost.

Per bucket a sorted set of keys (all at score 0, so ZRANGEBYLEX walks them in
byte order) and a hash key -> entry JSON; the list of buckets (service/redis/buckets.py);
and per content the set of the entries (`<bucket>/<key>`) that refer to it, or that a
commit in flight is about to write, so that a blob can be freed the moment its last
entry goes.

Two listings follow from the entries' metadata, kept by the same scripts in the bucket's slot:
per bucket a sorted set of `<purpose>\\0<key>` for the entries with a metadata `purpose` (so a
page of one purpose is one range, however rare the purpose: OpenAI's `purpose` filter), and a
sorted set of the keys scored by the metadata `expires_at` (unix seconds), which the sweeper
reads from the earliest of every bucket.

`ready` holds a generation id while the index is complete. Losing Redis's data
loses that key too, so readers notice and rebuild from the volume. Writers
(commit, delete) change the volume first and then the index unconditionally;
the rebuild only adds entries that are absent and re-checks the volume after,
so a rebuild racing with writers ends up agreeing with the volume.

A change touches keys of two hash slots besides its bucket's (the stream `events`, the
content's references), which no script may do on a cluster. So the script that changes
the bucket's index also drops the change's intent and appends, in the same step, an
item to the bucket's outbox: the change's event and the reference it ends. Then the
outbox is applied (`_apply`): each item's event appended to the stream, its reference
taken out, and only then the item removed, in order, by one process at a time per
bucket. A process that dies between the two leaves the items in the outbox; the next
change of that bucket, or the sweep, applies them. So an event exists for every change
and only for a change; an item applied but not yet removed when its process died is
applied again: consumers may see an event twice (the contract promises at least once),
never out of order for one key. The rebuild's reloads and its undoing of them are no
changes and give no event.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections.abc import Collection

import redis.asyncio as redis

from service.core import ports
from service.core.crashpoints import crash_point
from service.core.errors import LostLocks, Unavailable
from service.core.model import Entry
from service.core.ports import EntryStore
from service.redis import references
from service.redis.connection import replication_ids
from service.redis.keyspace import KeySpace, key_slot
from service.redis.leases import Leases, own, release_lua
from service.redis.references import reference
from service.redis.together import call


# Lua that makes the stream fields of an event of type `kind` about the entry JSON `entry`, at time ARGV[time].
def _event_lua(time: str) -> str:
    return f"""
local function event(kind, entry)
  local fields = cjson.decode(entry)
  return {{'type', kind, 'bucket', fields.bucket, 'key', fields.key, 'digest', 'blake3:' .. fields.digest,
    'bytes', string.match(entry, '"bytes":(%d+)'), 'mime_type', fields.mime_type, 'time', {time}}}
end
"""


# Lua that keeps the listings that follow from an entry's metadata, KEYS[4] (`<purpose>\0<key>` for a
# metadata `purpose`) and KEYS[5] (the key scored by a metadata `expires_at`, unix seconds), for the entry JSON
# `entry` of `key`: `op` 'zadd' counts it in, 'zrem' takes it out.
_METADATA_LUA = r"""
local function listed(op, key, entry)
  local metadata = cjson.decode(entry).metadata
  if type(metadata) ~= 'table' then return end
  local purpose = metadata.purpose
  if type(purpose) == 'string' and not string.find(purpose, '\0', 1, true) then
    if op == 'zadd' then redis.call('zadd', KEYS[4], 0, purpose .. '\0' .. key)
    else redis.call('zrem', KEYS[4], purpose .. '\0' .. key) end
  end
  local expires = metadata.expires_at
  if type(expires) == 'string' and string.match(expires, '^%d+$') then
    if op == 'zadd' then redis.call('zadd', KEYS[5], tonumber(expires), key)
    else redis.call('zrem', KEYS[5], key) end
  end
end
"""


# Lua that takes the outbox KEYS[outbox] to apply it: its lock KEYS[lock] with the token and lease given, and up
# to `count` items. Returns {0} when another process holds it, else {1, item, ...}.
def _take_lua(lock: str, outbox: str) -> str:
    return f"""
local function take(token, ms, count)
  if not redis.call('set', KEYS[{lock}], token, 'NX', 'PX', ms) then return {{0}} end
  local items = redis.call('lrange', KEYS[{outbox}], 0, tonumber(count) - 1)
  if #items == 0 then redis.call('del', KEYS[{lock}]) end
  table.insert(items, 1, 1)
  return items
end
"""


# KEYS: bucket keys, bucket entries, bucket members, the bucket's purposes, its expiring entries, its intents,
# its outbox, the outbox's lock, then locks of its slot to let go of. ARGV: key, json, digest, the locks' token
# (which also names the intent to drop; '' for none), the time, the entry's reference (its member of the
# content's refs, already added), then a token, lease ms and count to take the outbox with. Queues a
# file.created, and the end of the replaced entry's reference, and takes the outbox (saving a round trip).
# Returns {the replaced entry's digest or '', then as `take`}, or {-1} without a change when the locks are
# no longer held with the token: the reference was added with them, and may have gone with them.
_PUT = (
    _event_lua("ARGV[5]")
    + _take_lua("8", "7")
    + _METADATA_LUA
    + """
for i = 9, #KEYS do
  if redis.call('get', KEYS[i]) ~= ARGV[4] then return {-1} end
end
local old = redis.call('hget', KEYS[2], ARGV[1])
local item = {event = event('file.created', ARGV[2])}
if old then
  item.unref = string.match(old, '"digest":"(%x+)"')
  item.member = redis.call('hget', KEYS[3], ARGV[1])
  listed('zrem', ARGV[1], old)
end
listed('zadd', ARGV[1], ARGV[2])
redis.call('hset', KEYS[2], ARGV[1], ARGV[2])
redis.call('hset', KEYS[3], ARGV[1], ARGV[6])
redis.call('zadd', KEYS[1], 0, ARGV[1])
if ARGV[4] ~= '' then redis.call('hdel', KEYS[6], ARGV[4]) end
redis.call('rpush', KEYS[7], cjson.encode(item))
"""
    + release_lua(9, "ARGV[4]")
    + """
local result = take(ARGV[7], ARGV[8], ARGV[9])
table.insert(result, 1, item.unref or '')
return result
"""
)

# KEYS: as _PUT. ARGV: key, json that must still be there ('' for any), the locks' token, the time, '1' to
# queue a file.deleted (else only the end of the entry's reference), then as _PUT's last three.
# Returns {the removed entry's digest or '', then as `take`} ({'', 0} when it removed nothing).
_REMOVE = (
    _event_lua("ARGV[4]")
    + _take_lua("8", "7")
    + _METADATA_LUA
    + """
if ARGV[3] ~= '' then redis.call('hdel', KEYS[6], ARGV[3]) end
"""
    + release_lua(9, "ARGV[3]")
    + """
local old = redis.call('hget', KEYS[2], ARGV[1])
if not old then return {'', 0} end
if ARGV[2] ~= '' and old ~= ARGV[2] then return {'', 0} end
local item = {unref = string.match(old, '"digest":"(%x+)"'), member = redis.call('hget', KEYS[3], ARGV[1])}
if ARGV[5] == '1' then item.event = event('file.deleted', old) end
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('hdel', KEYS[3], ARGV[1])
redis.call('zrem', KEYS[1], ARGV[1])
listed('zrem', ARGV[1], old)
redis.call('rpush', KEYS[7], cjson.encode(item))
local result = take(ARGV[6], ARGV[7], ARGV[8])
table.insert(result, 1, item.unref)
return result
"""
)

# KEYS: bucket keys, bucket entries, bucket members, the bucket's purposes, its expiring entries. ARGV: key,
# json, reference, key, json, reference, ... Adds the entries that are absent (the rebuild: an entry there is
# newer than the volume's it read). Returns 1 or 0 per entry: added?
_LOAD = (
    _METADATA_LUA
    + """
local added = {}
for i = 1, #ARGV, 3 do
  local new = redis.call('hsetnx', KEYS[2], ARGV[i], ARGV[i + 1])
  if new == 1 then
    redis.call('zadd', KEYS[1], 0, ARGV[i])
    redis.call('hset', KEYS[3], ARGV[i], ARGV[i + 2])
    listed('zadd', ARGV[i], ARGV[i + 1])
  end
  table.insert(added, new)
end
return added
"""
)

# KEYS: the ordered set (bucket keys, or the bucket's purposes), bucket entries. ARGV: min, max, count, '1' for
# the reverse order, how many characters of each member go before its key. Returns the entries' JSON.
_PAGE = """
local keys
if ARGV[4] == '1' then
  keys = redis.call('zrevrangebylex', KEYS[1], ARGV[2], ARGV[1], 'LIMIT', 0, ARGV[3])
else
  keys = redis.call('zrangebylex', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
end
local skip = tonumber(ARGV[5])
if skip > 0 then
  for i, member in ipairs(keys) do keys[i] = string.sub(member, skip + 1) end
end
local result = {}
for first = 1, #keys, 1000 do
  local values = redis.call('hmget', KEYS[2], unpack(keys, first, math.min(first + 999, #keys)))
  for _, value in ipairs(values) do table.insert(result, value) end
end
return result
"""

# KEYS: the outbox's lock, the outbox. ARGV: token, lease ms, count. As `take`; the lock is let go of at once
# when the outbox is empty.
_TAKE = _take_lua("1", "2") + "return take(ARGV[1], ARGV[2], ARGV[3])\n"

# KEYS: as _TAKE. ARGV: token, the number of items applied. Removes them and lets go; returns how many
# items are left, or -1 when the lock ran out meanwhile (another process has taken them over).
_APPLIED = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('ltrim', KEYS[2], tonumber(ARGV[2]), -1)
redis.call('del', KEYS[1])
return redis.call('llen', KEYS[2])
"""

# KEYS: rebuild lock, ready. ARGV: lock token, generation.
_FINISH = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2])
return 1
"""

# KEYS: rebuilds. ARGV: the start of a rebuild (or of a window a failover may have lost). The earliest start
# and the latest are kept.
_REBUILD_BEGUN = """
local earliest = redis.call('hget', KEYS[1], 'earliest')
if not earliest or tonumber(ARGV[1]) < tonumber(earliest) then redis.call('hset', KEYS[1], 'earliest', ARGV[1]) end
local latest = redis.call('hget', KEYS[1], 'latest')
if not latest or tonumber(ARGV[1]) > tonumber(latest) then redis.call('hset', KEYS[1], 'latest', ARGV[1]) end
"""

# KEYS: rebuilds. ARGV: the latest start caught up on; a rebuild begun since keeps the record.
_CAUGHT_UP = """
if redis.call('hget', KEYS[1], 'latest') == ARGV[1] then redis.call('del', KEYS[1]) end
"""

REBUILD_BATCH = 1000

log = logging.getLogger("files.service")


APPLY_BATCH = 100


class EntryIndex:
    def __init__(
        self, client: redis.Redis, keys: KeySpace, leases: Leases, entries: EntryStore, events_maxlen: int
    ) -> None:
        self.client = client
        self.events_maxlen = events_maxlen
        self.keys = keys
        self.leases = leases
        self.buckets_list = leases.buckets
        self.entries = entries
        self._put = client.register_script(_PUT)
        self._remove = client.register_script(_REMOVE)
        self._load = client.register_script(_LOAD)
        self._page = client.register_script(_PAGE)
        self._take = client.register_script(_TAKE)
        self._applied = client.register_script(_APPLIED)
        self._finish = client.register_script(_FINISH)
        self._rebuild_begun = client.register_script(_REBUILD_BEGUN)
        self._caught_up = client.register_script(_CAUGHT_UP)

    def _bucket_keys(self, bucket: str) -> list[str]:
        keys = self.keys
        return [
            keys.bucket_keys(bucket),
            keys.bucket_entries(bucket),
            keys.bucket_members(bucket),
            keys.bucket_purposes(bucket),
            keys.bucket_expiring(bucket),
            keys.intents(bucket),
            keys.outbox(bucket),
            keys.lock(f"outbox:{bucket}"),
        ]

    def _taking(self) -> list[str | int]:
        """The change scripts' last arguments: a token, a lease and a count to take the outbox with."""
        return [self.leases.token(), int(self.leases.seconds * 1000), APPLY_BATCH]

    async def _locks_of(self, bucket: str, release: ports.Lease | None) -> tuple[list[str], str]:
        """The locks of `release` in the bucket's slot (its script lets go of them) and its token."""
        if release is None:
            return [], ""
        lease = own(release)
        slot = key_slot(self.keys.bucket_keys(bucket))
        return [key for key in lease.keys if key_slot(key) == slot], lease.token

    async def _let_go(self, release: ports.Lease | None, gone: list[str]) -> None:
        if release is not None:
            await own(release).release_except(gone)
            release.released = True

    async def put(self, entry: Entry, release: ports.Lease | None = None) -> str | None:
        """Count the entry in; with `release`, let go of that lease and drop its intent in the same step.

        Without `release`, the entry's reference to its content is added first (a commit's lease
        added it with the blob's lock; LostLocks, nothing changed, when those locks went since).
        Returns the digest of the entry the index held for that key before, if any.
        """
        await self.buckets_list.register(entry.bucket)
        locks, token = await self._locks_of(entry.bucket, release)
        if release is None:
            token_of_reference = self.leases.token()
            async with self.client.pipeline(transaction=False) as pipe:
                member = reference(entry.bucket, entry.key, token_of_reference)
                references.claim(pipe, self.keys, entry.digest, entry.bucket, member)
                await pipe.execute()
        else:
            token_of_reference = token
        taking = self._taking()
        replaced, *taken = await self._put(
            keys=self._bucket_keys(entry.bucket) + locks,
            args=[
                entry.key,
                entry.model_dump_json(),
                entry.digest,
                token,
                repr(time.time()),
                reference(entry.bucket, entry.key, token_of_reference),
                *taking,
            ],
        )
        if replaced == -1:
            raise LostLocks(f"the locks of the commit of {entry.bucket}/{entry.key} went before it was counted in")
        await self._applied_letting_go(entry.bucket, str(taking[0]), taken, release, locks)
        return replaced or None

    async def remove(self, bucket: str, key: str, release: ports.Lease | None = None) -> str | None:
        """Take the key out; with `release`, as `put`. Returns the digest of the entry removed, if any."""
        locks, token = await self._locks_of(bucket, release)
        taking = self._taking()
        removed, *taken = await self._remove(
            keys=self._bucket_keys(bucket) + locks, args=[key, "", token, repr(time.time()), "1", *taking]
        )
        await self._applied_letting_go(bucket, str(taking[0]), taken, release, locks)
        return removed or None

    async def _applied_letting_go(
        self, bucket: str, token: str, taken: list[str], release: ports.Lease | None, gone: list[str]
    ) -> None:
        """After a change script: let go of the rest of `release` (the content's lock), and apply the
        outbox the script took; both in the outbox's first round trip when there is one."""
        if release is not None and (int(taken[0]) == 0 or len(taken) < 2):
            await self._let_go(release, gone)
            release = None
        crash_point("change-indexed")
        await self.apply(bucket, token, taken, release, gone)

    async def apply(
        self,
        bucket: str,
        token: str | None = None,
        taken: list[str] | None = None,
        release: ports.Lease | None = None,
        gone: list[str] | None = None,
    ) -> None:
        """Apply the bucket's outbox (events to append, references that ended), in order, unless
        another process is applying it: that one looks again before it stops, so it applies ours.
        `token` and `taken`: the outbox as a change script took it already (as `take` answers), with
        items in it; `release` (but for its locks `gone`): a lease let go of in the first round trip."""
        lock, outbox = self.keys.lock(f"outbox:{bucket}"), self.keys.outbox(bucket)
        while True:
            if token is None or taken is None:
                token, taking = self.leases.token(), self._taking()[1:]
                taken = await self._take(keys=[lock, outbox], args=[token, *taking])
            items = taken[1:]
            if int(taken[0]) == 0 or not items:
                return
            async with self.client.pipeline(transaction=False) as pipe:
                if release is not None:
                    own(release).release_on(pipe, gone or [])
                for raw in items:
                    item = json.loads(raw)
                    if event := item.get("event"):
                        fields = dict(zip(event[::2], event[1::2], strict=True))
                        pipe.xadd(self.keys.events, fields, maxlen=self.events_maxlen, approximate=True)
                    if item.get("unref") and item.get("member"):
                        references.end(pipe, self.keys, item["unref"], bucket, item["member"])
                await pipe.execute()
            if release is not None:
                release.released, release = True, None
            crash_point("outbox-applied")
            if await self._applied(keys=[lock, outbox], args=[token, len(items)]) <= 0:
                return
            token = taken = None

    async def apply_all(self) -> int:
        """Apply the outboxes left behind by processes that died between a change and its events; the
        number of buckets that had some."""
        buckets = await self.buckets_list.all()
        async with self.client.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.llen(self.keys.outbox(bucket))
            lengths = await pipe.execute()
        pending = [bucket for bucket, length in zip(buckets, lengths, strict=True) if length]
        for bucket in pending:
            await self.apply(bucket)
        return len(pending)

    async def get(self, bucket: str, key: str) -> Entry | None:
        value = await self.client.hget(self.keys.bucket_entries(bucket), key)
        return Entry.model_validate_json(value) if value is not None else None

    async def buckets(self) -> list[str]:
        await self.rebuild()
        buckets = await self.buckets_list.all()
        async with self.client.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.exists(self.keys.bucket_keys(bucket))
            held = await pipe.execute()
        return [bucket for bucket, count in zip(buckets, held, strict=True) if count]

    async def page(
        self,
        bucket: str,
        prefix: str,
        after: str | None,
        limit: int,
        reverse: bool = False,
        purpose: str | None = None,
    ) -> tuple[list[Entry], bool]:
        """Up to `limit` entries of `bucket` in key order (or the reverse), and whether more follow;
        with `purpose`, only those whose metadata `purpose` is that: one range read either way, sent
        with the look at `index:ready` (another slot) in one round trip; read again after a rebuild."""
        low, high = f"[{prefix}", f"({prefix}\U0010ffff" if prefix else "+"
        if after is not None and not reverse and after >= prefix:
            low = f"({after}"
        if after is not None and reverse and (after < prefix or after.startswith(prefix)):
            high = f"({after}"
        ordered, skip = self.keys.bucket_keys(bucket), 0
        if purpose is not None:
            # Members are '<purpose>\0<key>': the same bounds, behind the purpose.
            ordered, skip = self.keys.bucket_purposes(bucket), len(purpose.encode()) + 1
            low = low[0] + f"{purpose}\0" + low[1:]
            high = f"({purpose}\0\U0010ffff" if high == "+" else high[0] + f"{purpose}\0" + high[1:]
        keys = [ordered, self.keys.bucket_entries(bucket)]
        args: list[str | int] = [low, high, limit + 1, 1 if reverse else 0, skip]
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.exists(self.keys.ready)
            call(pipe, self._page, keys, args)
            ready, result = await pipe.execute()
        if not ready:
            await self.rebuild()
            result = await self._page(keys=keys, args=args)
        found = [Entry.model_validate_json(value) for value in result if value is not None]
        found = [entry for entry in found if entry.key.startswith(prefix)]
        return found[:limit], len(found) > limit

    async def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(bucket, key) of up to `limit` entries whose metadata `expires_at` is `now` or earlier, the
        earliest first; rebuilds a lost index first (the entries on the volume are the truth).

        Each bucket keeps its own expiring set, changed in the same step as its entries, so a crash
        leaves none out of step; the list of buckets holds every bucket before its first entry."""
        await self.rebuild()
        buckets = await self.buckets_list.all()
        async with self.client.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.zrangebyscore(self.keys.bucket_expiring(bucket), "-inf", now, start=0, num=limit, withscores=True)
            found = await pipe.execute()
        due = sorted(
            (float(score), bucket, str(key))
            for bucket, members in zip(buckets, found, strict=True)
            for key, score in members
        )
        return [(bucket, key) for _, bucket, key in due[:limit]]

    async def unreferenced(self, digest: str) -> bool:
        """True only when the index is complete and no entry nor commit in flight refers to `digest`."""
        holding = await self.client.scard(self.keys.holders(digest))
        return holding == 0 and await self.is_ready()

    async def held_in(self, digest: str, buckets: Collection[str] | None) -> bool:
        """Whether an entry (or a commit in flight) of one of `buckets` (None: of any bucket) refers to
        `digest`; rebuilds a lost index first. One command whatever the answer, that names only `buckets`."""
        await self.rebuild()
        if buckets is None:
            return bool(await self.client.exists(self.keys.holders(digest)))
        if not buckets:
            return False
        return any(await self.client.smismember(self.keys.holders(digest), sorted(buckets)))

    async def referenced(self, digests: list[str]) -> set[str] | None:
        """Those of `digests` some entry (or commit in flight) refers to, or None while the index is not complete."""
        if not await self.is_ready():
            return None
        async with self.client.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.exists(self.keys.holders(digest))
            found = await pipe.execute()
        return {digest for digest, exists in zip(digests, found, strict=True) if exists}

    async def is_ready(self) -> bool:
        return bool(await self.client.exists(self.keys.ready))

    async def rebuild(self, wait: float = 60.0) -> None:
        """Load every entry from the volume, or wait while another process does it."""
        deadline = time.monotonic() + wait
        while not await self.is_ready():
            self.buckets_list.forget()
            lease = await self.leases.acquire("index-rebuild")
            if lease is not None:
                try:
                    async with lease.kept_alive():
                        await self._load_all(lease.key, lease.token)
                finally:
                    await lease.release()
                continue
            if time.monotonic() > deadline:
                raise Unavailable("the file index is being rebuilt; try again shortly")
            await asyncio.sleep(0.05)

    async def rebuild_window(self) -> tuple[float, float] | None:
        await self._notice_failover()
        earliest, latest = await self.client.hmget(self.keys.rebuilds, ["earliest", "latest"])
        if earliest is None or latest is None:
            return None
        return float(earliest), float(latest)

    async def _notice_failover(self) -> None:
        """Note a failover as a rebuild begun when Redis was last known to hold every index change.

        `index:replication` holds the master's replication id and when it was seen. Replication keeps
        the master's order, so a promoted replica that holds that record holds every change made before
        it; the changes it may lack are those since. A promoted replica has a new id: the window from the
        record's time is then caught up on (`Catalog.catch_up`), as after a rebuild. No cost per commit:
        one look per sweep. On a cluster, the record lives with the `{index}` slot, and another primary's
        lag is covered by the lease the catch-up reaches back by.
        """
        now = await replication_ids(self.client)
        if now is None:
            return
        seen, since = await self.client.hmget(self.keys.replication, ["id", "time"])
        if seen is not None and since is not None and seen != now:
            log.warning("Redis failed over (replication id changed): catching up the index from %s", since)
            await self._rebuild_begun(keys=[self.keys.rebuilds], args=[since])
        await self.client.hset(self.keys.replication, mapping={"id": now, "time": repr(time.time())})

    async def caught_up(self, latest: float) -> None:
        await self._caught_up(keys=[self.keys.rebuilds], args=[repr(latest)])

    async def _load_all(self, lock_key: str, token: str) -> None:
        await self._rebuild_begun(keys=[self.keys.rebuilds], args=[repr(time.time())])
        scan = self.entries.scan()
        while batch := await asyncio.to_thread(lambda: list(itertools.islice(scan, REBUILD_BATCH))):
            await self._load_batch(batch)
        await self._finish(keys=[lock_key, self.keys.ready], args=[token, secrets.token_hex(8)])

    async def _load_batch(self, batch: list[Entry]) -> None:
        await self.buckets_list.register(*{entry.bucket for entry in batch})
        token = self.leases.token()
        by_bucket: dict[str, list[Entry]] = {}
        for entry in batch:
            by_bucket.setdefault(entry.bucket, []).append(entry)
        for bucket, entries in by_bucket.items():
            arguments = [
                value
                for entry in entries
                for value in (entry.key, entry.model_dump_json(), reference(bucket, entry.key, token))
            ]
            # Referred to before they are listed, as a commit does; the references of those not added go again.
            async with self.client.pipeline(transaction=False) as pipe:
                for entry in entries:
                    references.claim(pipe, self.keys, entry.digest, bucket, reference(bucket, entry.key, token))
                await pipe.execute()
            added = await self._load(keys=self._bucket_keys(bucket)[:5], args=arguments)
            async with self.client.pipeline(transaction=False) as pipe:
                for entry, new in zip(entries, added, strict=True):
                    if not new:
                        references.end(pipe, self.keys, entry.digest, bucket, reference(bucket, entry.key, token))
                await pipe.execute()
        # A delete may have removed an entry between our read and our insert: undo those.
        gone = await asyncio.to_thread(lambda: [entry for entry in batch if not self.entries.exists(entry)])
        for entry in gone:
            taking = self._taking()
            _, *taken = await self._remove(
                keys=self._bucket_keys(entry.bucket),
                args=[entry.key, entry.model_dump_json(), "", repr(time.time()), "", *taking],
            )
            await self.apply(entry.bucket, str(taking[0]), taken)
