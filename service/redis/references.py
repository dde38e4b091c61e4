"""Who refers to each content, in the content's hash slot (`{blob:<digest>}`), so that the blob can be
freed when nothing does and an upload can be told whether its content is held where its caller may read.

Per content and bucket a set of members, `<bucket>/<key>/<change token>`: one per entry of that
bucket that refers to the content, and one per commit in flight that will (its claim). Per content
the set of buckets whose set is not empty (`holders`). Members are per change, so adding and ending
one is idempotent, and ending an old entry's member never ends a newer claim of the same key.
These functions add their commands to a pipeline (the caller sends it): plain commands, and one
EVAL, never EVALSHA, which a cluster's pipeline could not load first.
"""

from __future__ import annotations

import redis.asyncio as redis

from service.redis.keyspace import KeySpace

# KEYS: the content's members of one bucket, its holders. ARGV: the member, the bucket.
_END = """
redis.call('srem', KEYS[1], ARGV[1])
if redis.call('scard', KEYS[1]) == 0 then redis.call('srem', KEYS[2], ARGV[2]) end
"""


def reference(bucket: str, key: str, token: str) -> str:
    """The member that stands for the entry of bucket/key a change (`token`) wrote or is writing."""
    return f"{bucket}/{key}/{token}"


def claim(pipe: redis.Redis, keys: KeySpace, digest: str, bucket: str, member: str) -> None:
    pipe.sadd(keys.refs(digest, bucket), member)
    pipe.sadd(keys.holders(digest), bucket)


def end(pipe: redis.Redis, keys: KeySpace, digest: str, bucket: str, member: str) -> None:
    pipe.eval(_END, 2, keys.refs(digest, bucket), keys.holders(digest), member, bucket)
