"""Content-addressed storage on a local (or shared) filesystem.

Bytes and hashes only: no HTTP and no Redis. The service decides *when* to
stage, place and delete; this package decides *how*, durably.
"""

from blobstore.digests import ContentHasher, Digests, hash_file
from blobstore.durable import StorageFull, fsync_dir, remove_stale_temporaries, write_atomic
from blobstore.staging import StagingArea, StagingFile, StagingLost
from blobstore.store import BlobStore

__all__ = [
    "BlobStore",
    "ContentHasher",
    "Digests",
    "StagingArea",
    "StagingFile",
    "StagingLost",
    "StorageFull",
    "fsync_dir",
    "hash_file",
    "remove_stale_temporaries",
    "write_atomic",
]
