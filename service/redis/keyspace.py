"""Every Redis key the service writes, all under one prefix (FILES_REDIS_PREFIX), laid out for a cluster.

A Redis Cluster runs a script or a multi-key command only on keys of one hash slot, and a key's
slot is that of its hash tag (the text between its first `{` and the next `}`) when it has one.
So the keys one operation touches together carry the same tag, and the tags are many, so that
the keys spread over the primaries:
- `{session:<id>}`: an upload session and its writer lock;
- `{bucket:<name>}`: a bucket's listing (keys, entries, the entries by metadata `purpose` and by
  metadata `expires_at`), its intents, its outbox of changes whose events and reference counts
  are still to be applied, and its entries' locks;
- `{blob:<digest>}`: who refers to a content, per bucket, which buckets hold it, and its lock;
- `{client:<requester>}`: the sessions a client has open;
- `{parted:<id>}`: an OpenAI upload's record (service/redis/parted.py);
- `{index}`: the index's readiness, its rebuild lock and record.
The events stream, the list of buckets, the blob statistics and the OpenAI uploads by expiry are
single keys (the contract names the stream). Names and tags contain no braces: bucket names,
digests, session ids, upload ids and the names of locks never do.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.crc import key_slot as _key_slot


class KeySpace:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.buckets = f"{prefix}index:buckets"
        self.ready = f"{prefix}index:ready:{{index}}"
        self.rebuilds = f"{prefix}index:rebuilds:{{index}}"
        self.replication = f"{prefix}index:replication:{{index}}"
        self.blob_stats = f"{prefix}stats:blobs"
        self.walked = f"{prefix}sweep:walked"  # set for a while after a sweep walked the whole store
        self.events = f"{prefix}events"
        self.parted_expiring = f"{prefix}parted-uploads:expiring"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{{session:{session_id}}}"

    def open_sessions(self, requester: str) -> str:
        return f"{self.prefix}open-sessions:{{client:{requester}}}"

    def lock(self, name: str) -> str:
        """The lock `name` (`session:<id>`, `entry:<bucket>/<key>`, `blob:<digest>`, `outbox:<bucket>`,
        `index-rebuild`, ...), in the slot of what it guards."""
        kind, _, subject = name.partition(":")
        if kind in ("entry", "outbox"):
            bucket, _, key = subject.partition("/")
            return f"{self.prefix}lock:{kind}:{{bucket:{bucket}}}/{key}"
        if kind == "blob":
            return f"{self.prefix}lock:blob:{{blob:{subject}}}"
        if kind == "session":
            return f"{self.prefix}lock:session:{{session:{subject}}}"
        if kind == "index-rebuild":
            return f"{self.prefix}lock:index-rebuild:{{index}}"
        return f"{self.prefix}lock:{name}"

    def bucket_keys(self, bucket: str) -> str:
        return f"{self.prefix}index:keys:{{bucket:{bucket}}}"

    def bucket_entries(self, bucket: str) -> str:
        return f"{self.prefix}index:entries:{{bucket:{bucket}}}"

    def bucket_members(self, bucket: str) -> str:
        """key -> the entry's member of its content's `refs` (see `reference`)."""
        return f"{self.prefix}index:members:{{bucket:{bucket}}}"

    def bucket_purposes(self, bucket: str) -> str:
        """`<purpose>\\0<key>` of the entries with a metadata `purpose`, all at score 0."""
        return f"{self.prefix}index:purposes:{{bucket:{bucket}}}"

    def bucket_expiring(self, bucket: str) -> str:
        """The keys of the entries with a metadata `expires_at`, scored by it."""
        return f"{self.prefix}index:expiring:{{bucket:{bucket}}}"

    def parted_upload(self, upload_id: str) -> str:
        return f"{self.prefix}parted-upload:{{parted:{upload_id}}}"

    def intents(self, bucket: str) -> str:
        return f"{self.prefix}intents:{{bucket:{bucket}}}"

    def outbox(self, bucket: str) -> str:
        return f"{self.prefix}outbox:{{bucket:{bucket}}}"

    def refs(self, digest: str, bucket: str) -> str:
        """The members (service/redis/references.py) of the entries of `bucket` that refer to `digest`."""
        return f"{self.prefix}refs:{{blob:{digest}}}:{bucket}"

    def holders(self, digest: str) -> str:
        """The buckets whose `refs` of `digest` are not empty."""
        return f"{self.prefix}holders:{{blob:{digest}}}"


def key_slot(key: str) -> int:
    """The cluster hash slot of `key` (on a single Redis, slots only decide which keys go together)."""
    return _key_slot(key.encode())


def by_slot(keys: Iterable[str]) -> list[list[str]]:
    """`keys` grouped by hash slot, in the order each slot first appears: one script call per group."""
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(key_slot(key), []).append(key)
    return list(groups.values())
