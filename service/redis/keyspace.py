"""Every Redis key the service writes, all under one prefix (FILES_REDIS_PREFIX)."""

from __future__ import annotations


class KeySpace:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.buckets = f"{prefix}index:buckets"
        self.refs = f"{prefix}index:refs"
        self.holders = f"{prefix}index:holders"
        self.ready = f"{prefix}index:ready"
        self.rebuilds = f"{prefix}index:rebuilds"
        self.blob_stats = f"{prefix}stats:blobs"
        self.intents = f"{prefix}intents"
        self.events = f"{prefix}events"
        self.expiring = f"{prefix}index:expiring"
        self.parted_expiring = f"{prefix}parted-uploads:expiring"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def open_sessions(self, requester: str) -> str:
        return f"{self.prefix}open-sessions:{requester}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def bucket_keys(self, bucket: str) -> str:
        return f"{self.prefix}index:keys:{bucket}"

    def bucket_entries(self, bucket: str) -> str:
        return f"{self.prefix}index:entries:{bucket}"

    def bucket_purposes(self, bucket: str) -> str:
        return f"{self.prefix}index:purposes:{bucket}"

    def parted_upload(self, upload_id: str) -> str:
        return f"{self.prefix}parted-upload:{upload_id}"
