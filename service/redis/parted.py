"""Parted uploads in Redis: one hash per upload (its fields, its status, a `part:<id>` field per part),
kept a day past the upload's expiry, and a sorted set of the uploads by when they expire, which the
sweep reads. Parts are added and the status moved by scripts that check the status (a part also the
expiry) in the same step, so a part never joins an upload that is closed, nor is an upload closed twice."""

from __future__ import annotations

import json

import redis.asyncio as redis

from service.core.errors import UploadClosed, UploadNotFound
from service.core.model import PartedUpload
from service.redis.keyspace import KeySpace

PART = "part:"

KEPT_SECONDS = 86400  # how long a record outlives its upload's expiry, should the sweep be late

# KEYS: the upload. ARGV: part id, now. 1 added, 0 unknown, else the status that refuses it.
_ADD_PART = """
local status = redis.call('hget', KEYS[1], 'status')
if not status then return 0 end
if status ~= 'pending' then return status end
if tonumber(redis.call('hget', KEYS[1], 'expires_at')) <= tonumber(ARGV[2]) then return 'expired' end
redis.call('hset', KEYS[1], 'part:' .. ARGV[1], '1')
return 1
"""

# KEYS: the upload. ARGV: the new status. {1, field, value, ...} closed, {0} unknown, {-1, status} closed already.
_CLOSE = """
local status = redis.call('hget', KEYS[1], 'status')
if not status then return {0} end
if status ~= 'pending' then return {-1, status} end
redis.call('hset', KEYS[1], 'status', ARGV[1])
local result = redis.call('hgetall', KEYS[1])
table.insert(result, 1, 1)
return result
"""


class PartedUploadStore:
    """The parted-upload store port on Redis."""

    def __init__(self, client: redis.Redis, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        self._add_part = client.register_script(_ADD_PART)
        self._close = client.register_script(_CLOSE)

    async def create(self, upload: PartedUpload) -> None:
        name = self.keys.parted_upload(upload.id)
        fields: dict[str, str | int] = {
            "bucket": upload.bucket,
            "key": upload.key,
            "mime_type": upload.mime_type,
            "size": upload.size,
            "metadata": json.dumps(dict(upload.metadata)),
            "owner": upload.owner or "",
            "created_at": upload.created_at,
            "expires_at": upload.expires_at,
            "status": upload.status,
        }
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(name, items=[item for pair in fields.items() for item in pair])
            pipe.expireat(name, upload.expires_at + KEPT_SECONDS)
            pipe.zadd(self.keys.parted_expiring, {upload.id: upload.expires_at})
            await pipe.execute()

    async def get(self, upload_id: str) -> PartedUpload:
        fields = await self.client.hgetall(self.keys.parted_upload(upload_id))
        if not fields:
            raise UploadNotFound()
        return _upload(upload_id, {str(name): str(value) for name, value in fields.items()})

    async def add_part(self, upload_id: str, part_id: str, now: float) -> None:
        result = await self._add_part(keys=[self.keys.parted_upload(upload_id)], args=[part_id, repr(now)])
        if result == 0:
            raise UploadNotFound()
        if result != 1:
            raise UploadClosed(f"the upload was {result} while this part was sent; the part is not kept")

    async def close(self, upload_id: str, status: str) -> PartedUpload:
        result = await self._close(keys=[self.keys.parted_upload(upload_id)], args=[status])
        if int(result[0]) == 0:
            raise UploadNotFound()
        if int(result[0]) == -1:
            raise UploadClosed(f"the upload is {result[1]} already")
        return _upload(upload_id, dict(zip(result[1::2], result[2::2], strict=True)))

    async def expired(self, now: float, limit: int) -> list[str]:
        return [
            str(upload_id)
            for upload_id in await self.client.zrangebyscore(self.keys.parted_expiring, "-inf", now, start=0, num=limit)
        ]

    async def forget(self, upload_id: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.parted_upload(upload_id))
            pipe.zrem(self.keys.parted_expiring, upload_id)
            await pipe.execute()


def _upload(upload_id: str, fields: dict[str, str]) -> PartedUpload:
    return PartedUpload(
        id=upload_id,
        bucket=fields["bucket"],
        key=fields["key"],
        mime_type=fields["mime_type"],
        size=int(fields["size"]),
        metadata=json.loads(fields["metadata"]),
        owner=fields["owner"] or None,
        created_at=int(fields["created_at"]),
        expires_at=int(fields["expires_at"]),
        status=fields["status"],
        parts=frozenset(name.removeprefix(PART) for name in fields if name.startswith(PART)),
    )
