"""The listing index in Redis: a cache of the entries on the volume, rebuilt when it is lost.

Per bucket a sorted set of keys (all at score 0, so ZRANGEBYLEX walks them in
byte order, either way) and a hash key -> entry JSON; a set of non-empty buckets; a
hash digest -> number of entries that refer to it, so that a blob can be
freed the moment its last entry goes; and a hash '<digest>:<bucket>' -> number
of entries of that bucket that refer to it, so that an upload of content stored
already can be told whether it is stored where its caller may read (`held_in`).

Two listings follow from the entries' metadata, kept by the same scripts: per bucket a
sorted set of `<purpose>\0<key>` for the entries with a metadata `purpose` (so a page of
one purpose is one range, however rare the purpose: OpenAI's `purpose` filter), and one
sorted set of `<bucket>/<key>` scored by the metadata `expires_at` (unix seconds), which
the sweeper reads from the earliest.

`ready` holds a generation id while the index is complete. Losing Redis's data
loses that key too, so readers notice and rebuild from the volume. Writers
(commit, delete) change the volume first and then the index unconditionally;
the rebuild only adds entries that are absent and re-checks the volume after,
so a rebuild racing with writers ends up agreeing with the volume.

Every change a writer (or the sweep settling one) makes appends its event to the stream
`events` in the same script, so the event exists exactly when the change does; the
rebuild's reloads and its undoing of them are no changes and append nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Collection

import redis.asyncio as redis

from service.core import ports
from service.core.errors import Unavailable
from service.core.model import Entry
from service.core.ports import EntryStore
from service.redis.keyspace import KeySpace
from service.redis.leases import Leases, own, release_lua

# Lua that keeps the metadata's listings (KEYS[8] the bucket's purposes, KEYS[9] the expiring entries) for
# the entry JSON `entry` of the key `key` in the bucket `bucket`: `op` 'zadd' counts it in, 'zrem' takes it out.
_METADATA_LUA = r"""
local function listed(op, bucket, key, entry)
  local metadata = cjson.decode(entry).metadata
  if type(metadata) ~= 'table' then return end
  local purpose = metadata.purpose
  if type(purpose) == 'string' and not string.find(purpose, '\0', 1, true) then
    if op == 'zadd' then redis.call('zadd', KEYS[8], 0, purpose .. '\0' .. key)
    else redis.call('zrem', KEYS[8], purpose .. '\0' .. key) end
  end
  local expires = metadata.expires_at
  if type(expires) == 'string' and string.match(expires, '^%d+$') then
    if op == 'zadd' then redis.call('zadd', KEYS[9], tonumber(expires), bucket .. '/' .. key)
    else redis.call('zrem', KEYS[9], bucket .. '/' .. key) end
  end
end
"""


# Lua that appends one event, the fields of the entry JSON `entry` and type `kind`, to the stream KEYS[6]
# trimmed to about ARGV[maxlen] events; nothing when that is '' (the rebuild reloading what it lost).
def _emit_lua(maxlen: str, time: str) -> str:
    return f"""
local function emit(kind, entry)
  if {maxlen} == '' then return end
  local fields = cjson.decode(entry)
  redis.call('xadd', KEYS[6], 'MAXLEN', '~', {maxlen}, '*', 'type', kind, 'bucket', fields.bucket,
    'key', fields.key, 'digest', 'blake3:' .. fields.digest, 'bytes', string.match(entry, '"bytes":(%d+)'),
    'mime_type', fields.mime_type, 'time', {time})
end
"""


# Lua that counts one entry of bucket `bucket` out of the references to `digest`: refs KEYS[4], holders KEYS[7].
_UNCOUNT = """
local function uncount(digest, bucket)
  if redis.call('hincrby', KEYS[4], digest, -1) <= 0 then redis.call('hdel', KEYS[4], digest) end
  local holder = digest .. ':' .. bucket
  if redis.call('hincrby', KEYS[7], holder, -1) <= 0 then redis.call('hdel', KEYS[7], holder) end
end
"""

# KEYS: bucket keys, bucket entries, buckets, refs, intents, events, holders, the bucket's purposes, the expiring
# entries, then locks to let go of. ARGV: bucket,
# key, json, digest, only-if-absent, the locks' token (which also names the intent to drop), the events'
# maxlen ('' for no event), the time. Appends a file.created in the same step as the change.
# Returns the digest of the entry it replaced ('' for none), or 0 when only-if-absent found one.
_PUT = (
    _emit_lua("ARGV[7]", "ARGV[8]")
    + _UNCOUNT
    + _METADATA_LUA
    + """
local old = redis.call('hget', KEYS[2], ARGV[2])
local replaced = ''
if old then
  if ARGV[5] == '1' then return 0 end
  replaced = string.match(old, '"digest":"(%x+)"')
  uncount(replaced, ARGV[1])
  listed('zrem', ARGV[1], ARGV[2], old)
end
listed('zadd', ARGV[1], ARGV[2], ARGV[3])
redis.call('hset', KEYS[2], ARGV[2], ARGV[3])
redis.call('zadd', KEYS[1], 0, ARGV[2])
redis.call('zadd', KEYS[3], 0, ARGV[1])
redis.call('hincrby', KEYS[4], ARGV[4], 1)
redis.call('hincrby', KEYS[7], ARGV[4] .. ':' .. ARGV[1], 1)
if ARGV[6] ~= '' then redis.call('hdel', KEYS[5], ARGV[6]) end
emit('file.created', ARGV[3])
"""
    + release_lua(10, "ARGV[6]")
    + "return replaced\n"
)

# KEYS: as _PUT. ARGV: bucket, key, json that must still be there ('' for any), the locks' token, the
# events' maxlen ('' for no event), the time. Appends a file.deleted with the removed entry's fields.
# Returns the digest of the entry it removed, '' for none.
_REMOVE = (
    _emit_lua("ARGV[5]", "ARGV[6]")
    + _UNCOUNT
    + _METADATA_LUA
    + """
if ARGV[4] ~= '' then redis.call('hdel', KEYS[5], ARGV[4]) end
"""
    + release_lua(10, "ARGV[4]")
    + """
local old = redis.call('hget', KEYS[2], ARGV[2])
if not old then return '' end
if ARGV[3] ~= '' and old ~= ARGV[3] then return '' end
local digest = string.match(old, '"digest":"(%x+)"')
uncount(digest, ARGV[1])
redis.call('hdel', KEYS[2], ARGV[2])
redis.call('zrem', KEYS[1], ARGV[2])
listed('zrem', ARGV[1], ARGV[2], old)
if redis.call('zcard', KEYS[1]) == 0 then redis.call('zrem', KEYS[3], ARGV[1]) end
emit('file.deleted', old)
return digest
"""
)

# KEYS: ready, the ordered set (bucket keys, or the bucket's purposes), bucket entries. ARGV: min, max, count,
# '1' for the reverse order, how many characters of each member go before its key.
# Returns {0} when the index is not ready, else {1, json, ...}.
_PAGE = """
if redis.call('exists', KEYS[1]) == 0 then return {0} end
local keys
if ARGV[4] == '1' then
  keys = redis.call('zrevrangebylex', KEYS[2], ARGV[2], ARGV[1], 'LIMIT', 0, ARGV[3])
else
  keys = redis.call('zrangebylex', KEYS[2], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
end
local skip = tonumber(ARGV[5])
if skip > 0 then
  for i, member in ipairs(keys) do keys[i] = string.sub(member, skip + 1) end
end
local result = {1}
for first = 1, #keys, 1000 do
  local values = redis.call('hmget', KEYS[3], unpack(keys, first, math.min(first + 999, #keys)))
  for _, value in ipairs(values) do table.insert(result, value) end
end
return result
"""

# KEYS: ready, buckets. Returns {0} when not ready, else {1, bucket, ...}.
_BUCKETS = """
if redis.call('exists', KEYS[1]) == 0 then return {0} end
local result = redis.call('zrange', KEYS[2], 0, -1)
table.insert(result, 1, 1)
return result
"""

# KEYS: ready, refs, intents. ARGV: digest. 1 when the index is ready, no entry refers to the digest
# and no intent names it (a commit that died after writing its entry has one, its entry no count yet).
_UNREFERENCED = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
if redis.call('hexists', KEYS[2], ARGV[1]) == 1 then return 0 end
local named = '"digest":"' .. ARGV[1] .. '"'
for _, intent in ipairs(redis.call('hvals', KEYS[3])) do
  if string.find(intent, named, 1, true) then return 0 end
end
return 1
"""

# KEYS: ready, refs, holders. ARGV: digest, '1' to look in every bucket (else '0'), then the buckets to look in.
# -1 when the index is not ready, else 1 when an entry of one of them refers to the digest, 0 when none.
# The same commands whatever the answer, so neither it nor its timing tells of the buckets not asked about.
_HELD_IN = """
if redis.call('exists', KEYS[1]) == 0 then return -1 end
if ARGV[2] == '1' then return redis.call('hexists', KEYS[2], ARGV[1]) end
if #ARGV == 2 then return 0 end
local holders = {}
for i = 3, #ARGV do holders[i - 2] = ARGV[1] .. ':' .. ARGV[i] end
local held = 0
for _, count in ipairs(redis.call('hmget', KEYS[3], unpack(holders))) do
  if count then held = 1 end
end
return held
"""

# KEYS: rebuild lock, ready. ARGV: lock token, generation.
_FINISH = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2])
return 1
"""

# KEYS: rebuilds. ARGV: the start of a rebuild. The earliest start stays, the latest is noted.
_REBUILD_BEGUN = """
redis.call('hsetnx', KEYS[1], 'earliest', ARGV[1])
redis.call('hset', KEYS[1], 'latest', ARGV[1])
"""

# KEYS: rebuilds. ARGV: the latest start caught up on; a rebuild begun since keeps the record.
_CAUGHT_UP = """
if redis.call('hget', KEYS[1], 'latest') == ARGV[1] then redis.call('del', KEYS[1]) end
"""

REBUILD_BATCH = 1000


class EntryIndex:
    def __init__(
        self, client: redis.Redis, keys: KeySpace, leases: Leases, entries: EntryStore, events_maxlen: int
    ) -> None:
        self.client = client
        self.events_maxlen = events_maxlen
        self.keys = keys
        self.leases = leases
        self.entries = entries
        self._put = client.register_script(_PUT)
        self._remove = client.register_script(_REMOVE)
        self._page = client.register_script(_PAGE)
        self._buckets = client.register_script(_BUCKETS)
        self._unreferenced = client.register_script(_UNREFERENCED)
        self._held_in = client.register_script(_HELD_IN)
        self._finish = client.register_script(_FINISH)
        self._rebuild_begun = client.register_script(_REBUILD_BEGUN)
        self._caught_up = client.register_script(_CAUGHT_UP)

    def _entry_keys(self, bucket: str) -> list[str]:
        keys = self.keys
        return [
            keys.bucket_keys(bucket),
            keys.bucket_entries(bucket),
            keys.buckets,
            keys.refs,
            keys.intents,
            keys.events,
            keys.holders,
            keys.bucket_purposes(bucket),
            keys.expiring,
        ]

    def _event_args(self) -> list[str]:
        """The scripts' last arguments for a change that appends its event: the stream's length, the time."""
        return [str(self.events_maxlen), repr(time.time())]

    async def put(self, entry: Entry, release: ports.Lease | None = None) -> str | None:
        """Count the entry in; with `release`, let go of that lease and drop its intent in the same step.

        Returns the digest of the entry the index held for that key before, if any.
        """
        locks, token = (list(own(release).keys), release.token) if release is not None else ([], "")
        replaced = await self._put(
            keys=self._entry_keys(entry.bucket) + locks,
            args=[entry.bucket, entry.key, entry.model_dump_json(), entry.digest, 0, token, *self._event_args()],
        )
        if release is not None:
            release.released = True
        return replaced or None

    async def remove(self, bucket: str, key: str, release: ports.Lease | None = None) -> str | None:
        """Take the key out; with `release`, as `put`. Returns the digest of the entry removed, if any."""
        locks, token = (list(own(release).keys), release.token) if release is not None else ([], "")
        removed = await self._remove(
            keys=self._entry_keys(bucket) + locks, args=[bucket, key, "", token, *self._event_args()]
        )
        if release is not None:
            release.released = True
        return removed or None

    async def get(self, bucket: str, key: str) -> Entry | None:
        value = await self.client.hget(self.keys.bucket_entries(bucket), key)
        return Entry.model_validate_json(value) if value is not None else None

    async def buckets(self) -> list[str]:
        result = await self._buckets(keys=[self.keys.ready, self.keys.buckets])
        if int(result[0]) == 0:
            await self.rebuild()
            return await self.buckets()
        return list(result[1:])

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
        with `purpose`, only those whose metadata `purpose` is that: one range read either way."""
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
        result = await self._page(
            keys=[self.keys.ready, ordered, self.keys.bucket_entries(bucket)],
            args=[low, high, limit + 1, 1 if reverse else 0, skip],
        )
        if int(result[0]) == 0:
            await self.rebuild()
            return await self.page(bucket, prefix, after, limit, reverse, purpose)
        found = [Entry.model_validate_json(value) for value in result[1:] if value is not None]
        found = [entry for entry in found if entry.key.startswith(prefix)]
        return found[:limit], len(found) > limit

    async def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(bucket, key) of up to `limit` entries whose metadata `expires_at` is `now` or earlier, the
        earliest first; rebuilds a lost index first (the entries on the volume are the truth)."""
        await self.rebuild()
        members = await self.client.zrangebyscore(self.keys.expiring, "-inf", now, start=0, num=limit)
        return [(bucket, key) for bucket, _, key in (str(member).partition("/") for member in members)]

    async def unreferenced(self, digest: str) -> bool:
        """True only when the index is complete and no entry refers to `digest`."""
        return bool(await self._unreferenced(keys=[self.keys.ready, self.keys.refs, self.keys.intents], args=[digest]))

    async def held_in(self, digest: str, buckets: Collection[str] | None) -> bool:
        """Whether an entry of one of `buckets` (None: of any bucket) refers to `digest`; rebuilds a lost index
        first. The same script and commands for any answer: see `_HELD_IN`."""
        anywhere = "1" if buckets is None else "0"
        held = await self._held_in(
            keys=[self.keys.ready, self.keys.refs, self.keys.holders], args=[digest, anywhere, *sorted(buckets or ())]
        )
        if int(held) < 0:
            await self.rebuild()
            return await self.held_in(digest, buckets)
        return bool(held)

    async def referenced(self) -> set[str] | None:
        """Every digest some entry refers to, or None while the index is not complete."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.exists(self.keys.ready)
            pipe.hkeys(self.keys.refs)
            ready, digests = await pipe.execute()
        return set(digests) if ready else None

    async def is_ready(self) -> bool:
        return bool(await self.client.exists(self.keys.ready))

    async def rebuild(self, wait: float = 60.0) -> None:
        """Load every entry from the volume, or wait while another process does it."""
        deadline = time.monotonic() + wait
        while not await self.is_ready():
            lease = await self.leases.acquire("index-rebuild")
            if lease is not None:
                try:
                    async with lease.kept_alive():
                        await self._load(lease.key, lease.token)
                finally:
                    await lease.release()
                continue
            if time.monotonic() > deadline:
                raise Unavailable("the file index is being rebuilt; try again shortly")
            await asyncio.sleep(0.05)

    async def rebuild_window(self) -> tuple[float, float] | None:
        earliest, latest = await self.client.hmget(self.keys.rebuilds, ["earliest", "latest"])
        if earliest is None or latest is None:
            return None
        return float(earliest), float(latest)

    async def caught_up(self, latest: float) -> None:
        await self._caught_up(keys=[self.keys.rebuilds], args=[repr(latest)])

    async def _load(self, lock_key: str, token: str) -> None:
        await self._rebuild_begun(keys=[self.keys.rebuilds], args=[repr(time.time())])
        scan = self.entries.scan()
        while batch := await asyncio.to_thread(lambda: list(itertools.islice(scan, REBUILD_BATCH))):
            await self._load_batch(batch)
        await self._finish(keys=[lock_key, self.keys.ready], args=[token, secrets.token_hex(8)])

    async def _load_batch(self, batch: list[Entry]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for entry in batch:
                await self._put(
                    keys=self._entry_keys(entry.bucket),
                    args=[entry.bucket, entry.key, entry.model_dump_json(), entry.digest, 1, "", "", ""],
                    client=pipe,
                )
            await pipe.execute()
        # A delete may have removed an entry between our read and our insert: undo those.
        gone = await asyncio.to_thread(lambda: [entry for entry in batch if not self.entries.exists(entry)])
        for entry in gone:
            await self._remove(
                keys=self._entry_keys(entry.bucket),
                args=[entry.bucket, entry.key, entry.model_dump_json(), "", "", ""],
            )
