"""The ports: what the core needs from the stores around it, as protocols any backend can implement.

Modelled on tusd's `DataStore` / `Locker` (small interfaces, optional capabilities as
interfaces of their own) and the OCI registry's `StorageDriver` (stat, a reader from an
offset, a writer committed by digest). Each docstring says what the method checks itself,
what its caller must have checked, and what it raises.

Blocking and async: the blob, staging and entry stores are blocking (a filesystem's calls
are), and the core calls them on worker threads, several in one trip where it can (placing
a blob and writing its entry is one trip: hand-offs between threads are the dear part of a
small upload). Only reading a blob is async: a download streams it. The session store, the
index, the intents and the leases are async (Redis).

Every name a store receives (bucket, key, digest, staging name) is checked by the core
first (`service.core.names`); a store still refuses one that would lead outside it
(`OutsideRoot`), whoever called it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Collection, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

from service.core.digests import Digests
from service.core.model import BlobInfo, Entry, Intent, PartedUpload, Session

Observe = Callable[[bytes], object]


class StagedFile(Protocol):
    """A staged upload open for writing; one writer at a time (the session's lease holder)."""

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        """Write all of `data` at `offset`. The caller writes in order, from where `open` began.
        The bytes are kept for sure once `sync` or `close` returns (a store may hold some back till then).
        `data` is the caller's again once this returns (the core reuses its buffers): a store that
        holds bytes back holds a copy.

        Raises StorageFull when the storage has no room (what was written may stay: the caller
        truncates back to the acknowledged offset).
        """

    def sync(self) -> None:
        """Make every byte written so far survive the death of this process: the caller moves the
        offset after this. (Writes to a file are in the kernel's hands already; an object store's
        staged file uploads what it holds back.)"""

    def truncate(self, length: int) -> None:
        """Drop everything from `length` on: bytes the service never acknowledged."""

    def close(self) -> None:
        """Finish writing; closing again does nothing. Afterwards the bytes are visible to
        `StagingArea.length`, `digests` and `BlobStore.commit`."""


class StagingArea(Protocol):
    """The partial content of uploads in progress, one staged upload per session, by its id."""

    def open(self, name: str, offset: int, read_back: bool = False) -> StagedFile:
        """Open the staged upload `name` for writing at `offset`, cutting off any bytes past it
        (left by a write that was never acknowledged).

        At offset 0 it is made (or emptied); past 0 it must hold at least `offset` bytes, else
        StagingLost (carrying on would leave a gap). Raises OutsideRoot for a name that leads out.
        With `read_back` the bytes are read again soon (a part, copied into its upload when that
        completes): a store that writes large writes past a cache keeps these in it.
        """

    def length(self, name: str) -> int | None:
        """How many bytes the staged upload holds; None when there is none of that name."""

    def digests(self, name: str, sha256: bool = False, md5: bool = False) -> Digests:
        """Hash the whole staged upload (BLAKE3, and SHA-256 and MD5 when asked for) in one read.

        The caller has closed every writer of it. Raises StagingLost when it is gone.
        """

    def concatenate(self, parts: Sequence[tuple[str, int]], into: str) -> None:
        """Make the staged upload `into` (made, or emptied) hold the first `length` bytes of each
        staged upload of `parts` (name, length), in order; the parts stay as they are.

        Each store copies its own best way (the kernel's copy on a filesystem). The caller holds
        `into`'s session (no other writer), has closed every writer of the parts and checked the
        names (none twice, `into` none of them). Raises StagingLost when a part is gone or holds
        fewer bytes than its length (`into` is then left holding a part of the whole: the caller
        removes it), StorageFull, and OutsideRoot.
        """

    def remove(self, name: str) -> None:
        """Remove the staged upload; removing one that is gone does nothing."""

    def names(self) -> list[str]:
        """The name of every staged upload (a store's own temporaries are none)."""


class Temporaries(Protocol):
    """What writes cut short leave in a store beside staged uploads: a file never renamed to its
    name, an object store's multipart upload never completed (a copy of a large blob, say)."""

    def stale(self, cutoff: float) -> list[str]:
        """Those begun before `cutoff` (unix seconds), by names `remove` takes. The caller picks a
        cutoff a lock's lease ago or more: every writer holds a lease while it writes, so by then
        the writer of one is dead."""

    def remove(self, name: str) -> None:
        """Remove one that `stale` named; one gone already is nothing to do."""


class StoreProbe(Protocol):
    """Whether the store can take writes now: what `/readyz` asks besides Redis."""

    def probe(self) -> None:
        """Raise OSError (ConnectionError for a store out of reach) when it cannot; blocks (I/O), so
        callers on the event loop run it in a thread, with their own timeout."""


@runtime_checkable
class LocalFiles(Protocol):
    """Capability: staged uploads are files on a local filesystem (hashed where they lie, hard links)."""

    def path(self, name: str) -> Path:
        """The file of the staged upload `name`, checked to lie inside the area (OutsideRoot)."""


class BlobStore(Protocol):
    """Content by its BLAKE3 digest (64 lower-case hex), each distinct content once."""

    def stat(self, digest: str) -> BlobInfo | None:
        """The blob, or None when there is none (anything else in its place is none either)."""

    def commit(self, staging: StagingArea, name: str, digest: str) -> bool:
        """Make the staged upload `name` of `staging` the blob `digest`; False when it was one already.

        The caller has hashed the staged content to `digest` (this does not hash again), holds
        the lock `blob:<digest>` (so no release of that blob runs meanwhile) and removes the
        staged upload itself once the upload is recorded as complete. The blob is durable when
        this returns, and never visible half-written. An existing blob of the same size is
        reused (that is the deduplication) and counts as placed now for `list`'s `modified`;
        one of another size is damaged and is replaced. Raises StorageFull, and OutsideRoot.
        """

    def store(self, content: bytes, digest: str) -> bool:
        """Make `content`, a whole upload held in memory, the blob `digest`; False when it was one already.

        As `commit` (the caller has hashed it and holds the lock; durable when this returns, never
        visible half-written; an equal blob reused), without a staged upload: a small upload that came
        in one request costs no staging file. Raises StorageFull, and OutsideRoot.
        """

    def read(self, digest: str, first: int, length: int, observe: Observe | None = None) -> AsyncGenerator[bytes, None]:
        """Stream `length` bytes of the blob from byte `first`, in bounded chunks.

        The blob is opened at the first step of the iteration: BlobMissing there when there is
        none. The caller has checked that the range lies within the blob's size; a blob that
        ends early raises CorruptBlob. `observe` sees every chunk, in order, where it is read
        (a worker thread for a filesystem): the core hashes whole downloads with it.
        """

    def delete(self, digest: str) -> bool:
        """Delete the blob durably; False when it was gone. The caller holds `blob:<digest>` and has
        checked that nothing refers to it."""

    def list(self) -> Iterator[BlobInfo]:
        """Every blob, in no particular order; things in the store that are not blobs are skipped."""


@runtime_checkable
class BlobStamps(Protocol):
    """Capability: a store that can tell that a blob is still the very file it was, so that a blob
    hashed whole once need not be hashed again on every whole download (service/core/files.py)."""

    def stamp(self, digest: str) -> Hashable | None:
        """A value equal to an earlier one only while the blob is the same file, unchanged since: any
        write to it, replacement or removal changes it (a filesystem: device, inode, size, mtime and
        ctime, which no one can set back). None when there is no blob. Cheap: one stat, no read."""


@runtime_checkable
class BlobURLs(Protocol):
    """Capability: a store that can hand out a URL a client downloads the blob from directly
    (an object store's presigned URL), so that a front may redirect instead of streaming."""

    def url_for(self, digest: str, mime_type: str, expires_in: float) -> str:
        """A URL from which a GET of the blob works for `expires_in` seconds, answering with `mime_type`
        as its Content-Type. Made without asking the store (so without checking that the blob exists):
        the caller has found the entry that refers to it."""


@runtime_checkable
class CheckedBlobs(Protocol):
    """Capability `fsck` needs of a blob store: its content hashed again, where a blob lies (told to a
    person: a path, a URL), and a place aside for a damaged one."""

    def where(self, digest: str) -> str:
        """Where the blob of `digest` lies, whether it is there or not."""

    def rehash(self, digest: str) -> str:
        """The BLAKE3 hex digest of the blob's content as stored now. BlobMissing when it is gone."""

    def quarantine(self, digest: str) -> str:
        """Move the blob out of the blobs, to where a person can look at it; returns that place."""


@runtime_checkable
class CheckedEntries(Protocol):
    """Capability `fsck` needs of an entry store: where entries lie, and which are damaged."""

    def where(self, bucket: str, key: str) -> str:
        """Where the entry of `bucket`/`key` lies, whether it is there or not."""

    def audit(self) -> tuple[list[Entry], list[tuple[str, str]]]:
        """Every entry that reads back as the one its place is for; and (where, why) of each stored
        thing that should be one and is not (`scan` skips those)."""


@runtime_checkable
class CheckedStaging(Protocol):
    """Capability `fsck` needs of a staging area: where a staged upload lies, and its age."""

    def where(self, name: str) -> str:
        """Where the staged upload `name` lies."""

    def written(self, name: str) -> float | None:
        """When the staged upload was last written (unix seconds, by the store's clock); None when gone."""


class EntryStore(Protocol):
    """Bucket/key entries, durable: the source of truth for which files exist."""

    def get(self, bucket: str, key: str) -> Entry | None:
        """The entry, or None. The caller has checked the names; a bucket that is no single name
        raises ValueError, one that leads outside the store OutsideRoot."""

    def put(self, entry: Entry) -> Entry | None:
        """Write the entry durably, replacing one of the same bucket and key; returns the one
        replaced. The caller holds `entry:<bucket>/<key>`. Raises StorageFull, OutsideRoot."""

    def delete(self, bucket: str, key: str) -> bool:
        """Remove the entry durably; False when there was none. The caller holds its entry lock."""

    def exists(self, entry: Entry) -> bool:
        """Whether exactly this entry can be read back."""

    def scan(self, changed_since: float | None = None) -> Iterator[Entry]:
        """Every entry, in no particular order; unreadable ones are skipped. With `changed_since`
        (unix seconds), only those written at or after it, by the store's own clock of the write."""


class ContentWriter(Protocol):
    """Where the blocking part of a commit of content held in memory runs (`catalog.store_content`):
    a worker thread costs a handover of the interpreter's lock per system call, a process none.
    Content of more than `most` bytes the catalog commits on a thread instead."""

    most: int

    async def store(self, entry: Entry, content: bytes) -> tuple[bool, Entry | None]:
        """`store_content` of `entry` from `content`: (blob newly placed?, entry replaced). The caller has
        hashed `content` to `entry.digest`, holds the locks of the change and has recorded its intent.
        Raises what `store_content` raises, and Unavailable when the writer died with the outcome unknown."""


class Lease(Protocol):
    """Locks one holder took together, identified by its `token`, with a lease that runs out
    unless renewed (a dead holder's locks free themselves)."""

    token: str
    released: bool

    def due(self) -> bool:
        """Whether a third of the lease has gone by since it was last renewed."""

    async def renew(self) -> bool:
        """Renew the lease; False when it is no longer held (it ran out and was taken)."""

    async def release(self) -> None:
        """Let go, unless already let go; an intent recorded with the locks stays."""

    async def settle(self) -> None:
        """Let go and drop the intent: the work ended having changed nothing."""

    def kept_alive(self) -> AbstractAsyncContextManager[None]:
        """Renew the lease in the background while the holder works."""


class Leases(Protocol):
    """The locker: named locks (`blob:<digest>`, `entry:<bucket>/<key>`, ...) with leases."""

    seconds: float

    def hold(
        self, *names: str, wait: float | None = None, intent: Intent | None = None
    ) -> AbstractAsyncContextManager[Lease]:
        """Hold all the locks `names` (all or none, so never a deadlock), waiting up to `wait`
        seconds (default: a lease) and then raising Unavailable. With `intent`, it is recorded
        under the lease's token with the locks, and a commit's content counts as referred to
        from then until the intent is forgotten or its change counted in. Let go on exit."""


def session_lock(session_id: str) -> str:
    """The name of the lock (`Leases`) that is a session's writer lease."""
    return f"session:{session_id}"


class SessionStore(Protocol):
    """Upload sessions, each with a time to live renewed by every request on it."""

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
        """A new session of the id `session_id` (new, made by the core), unless `requester` has
        `max_open` open already (TooManySessions). The caller has checked every field. With
        `length_deferred`, `size` is the limit until `declare_size`; with `part`, the session is a
        part of a concatenation (`Session.part`), which the core completes at its size unhashed."""

    async def get(self, session_id: str) -> Session:
        """The session, its time to live renewed; SessionNotFound when unknown or expired."""

    async def begin_write(self, session_id: str) -> tuple[Session, Lease]:
        """Take the session's writer lease without waiting, and read it in the same step:
        SessionNotFound, SessionCompleted, or SessionBusy (another writer holds it).

        The writer lease is the lock `session_lock(session_id)` of `Leases`: the core holds that
        of a completed session (a part being concatenated) itself, and begin_write then finds it
        held (SessionBusy) or the session completed."""

    async def advance(
        self, session: Session, lease: Lease, offset: int, complete: bool = False, release: bool = False
    ) -> Session:
        """Move the offset from `session.offset` to `offset` and renew the lease (or, with
        `complete` or `release`, let go of it). The caller has written the bytes it covers.
        Raises SessionNotFound (expired or cancelled meanwhile) or LostLease."""

    async def declare_size(self, session: Session, lease: Lease, size: int) -> Session:
        """Set the size of a session created with `length_deferred`, once. The caller holds the
        session's lease and has checked `size` against the offset and the limit. Raises
        SessionNotFound (expired or cancelled meanwhile) or LostLease."""

    async def declare_metadata(self, session: Session, lease: Lease, metadata: Mapping[str, str]) -> Session:
        """Replace the metadata of an open session (a front that learns it only after the bytes, as
        from a form whose fields follow its file). The caller holds the session's lease and has
        checked the metadata. Raises SessionNotFound (expired or cancelled meanwhile) or LostLease."""

    async def assembled(self, session: Session, lease: Lease, size: int, parts: Sequence[str]) -> Session:
        """Record that the session's staged content is the concatenation of the sessions `parts`,
        `size` bytes in all: its size set (a deferred one declared), its offset at the size, still
        open (the commit follows). The caller holds the session's lease and has checked the parts
        and the size. Raises SessionNotFound (expired or cancelled meanwhile) or LostLease."""

    async def delete(self, session_id: str) -> None:
        """Forget the session; forgetting an unknown one does nothing."""

    async def exist(self, session_ids: list[str]) -> list[bool]:
        """Which of these sessions are still known."""


class PartedUploadStore(Protocol):
    """Parted uploads, each kept until a while after its `expires_at`, so that the sweep can drop
    the parts of one that expired (then it is gone: UploadNotFound)."""

    async def create(self, upload: PartedUpload) -> None:
        """Keep the new upload (a new id, made by the core). The caller has checked every field."""

    async def get(self, upload_id: str) -> PartedUpload:
        """The upload with its parts, as stored (a pending one past `expires_at` still says
        'pending'); UploadNotFound when unknown or forgotten."""

    async def add_part(self, upload_id: str, part_id: str, now: float) -> None:
        """Count the part session `part_id` in, in one step with checking that the upload is still
        pending and not expired at `now`: UploadNotFound, or UploadClosed."""

    async def close(self, upload_id: str, status: str) -> PartedUpload:
        """Move the upload from 'pending' to `status` ('completed' or 'cancelled') in one step, so
        that two requests cannot both close it: UploadNotFound, or UploadClosed when it was closed.
        The caller has checked that it had not expired (a completion under way may end past it)."""

    async def expired(self, now: float, limit: int) -> list[str]:
        """The ids of up to `limit` uploads whose `expires_at` is `now` or earlier, whatever their status."""

    async def forget(self, upload_id: str) -> None:
        """Drop the upload; dropping one that is gone does nothing."""


class EntryIndex(Protocol):
    """The listing index and reference counts: a cache of the entry store, rebuilt when lost."""

    async def put(self, entry: Entry, release: Lease | None = None) -> str | None:
        """Count the entry in (with `release`, the lease of the commit's intent: let go of it and
        drop the intent in the same step), and append its file.created event; returns the digest
        of the entry it replaced in the index, if any. A process that dies part-way leaves the
        event (and the end of the replaced entry's reference) to `apply_all`, never lost.
        Raises LostLocks, having changed nothing, when `release`'s locks are no longer held by it
        (the content's claim taken with them may be gone): the caller reconciles under new ones."""

    async def remove(self, bucket: str, key: str, release: Lease | None = None) -> str | None:
        """Take the key out and append its file.deleted, with `release` as `put`; returns the digest
        of the entry removed."""

    async def apply_all(self) -> int:
        """Append the events (and end the references) of changes whose process died between
        counting them in and that; the number of buckets that had some. An event may so be
        appended twice (at least once), never out of order for one key."""

    async def get(self, bucket: str, key: str) -> Entry | None:
        """The indexed entry of the key, or None."""

    async def buckets(self) -> list[str]:
        """Every bucket holding a file, in order; rebuilds a lost index first."""

    async def page(
        self,
        bucket: str,
        prefix: str,
        after: str | None,
        limit: int,
        reverse: bool = False,
        purpose: str | None = None,
    ) -> tuple[list[Entry], bool]:
        """Up to `limit` entries of `bucket` whose keys start with `prefix`, in key order after `after`
        (with `reverse`, in the reverse order, before `after`), and whether more follow. With `purpose`,
        only the entries whose metadata `purpose` is that. Reads about `limit` entries, however many
        the bucket holds (no scan); rebuilds a lost index first."""

    async def expired(self, now: float, limit: int) -> list[tuple[str, str]]:
        """(bucket, key) of up to `limit` entries whose metadata `expires_at` (unix seconds) is `now` or
        earlier, the earliest first; rebuilds a lost index first. The caller checks the entry again
        (under its lock) before it deletes: the index may lag behind the volume."""

    async def unreferenced(self, digest: str) -> bool:
        """True only when the index is complete and no entry nor intent refers to `digest`."""

    async def held_in(self, digest: str, buckets: Collection[str] | None) -> bool:
        """Whether an entry of one of `buckets` (None: of any bucket) refers to `digest`; rebuilds a lost
        index first. The caller asks only about buckets its principal may read: the work done depends
        on `buckets` alone, never on what other buckets hold, so neither the answer nor its timing tells
        anything of them. Raises Unavailable when a lost index is not rebuilt in time (as `rebuild`)."""

    async def referenced(self, digests: list[str]) -> set[str] | None:
        """Those of `digests` some entry or intent refers to, or None while the index is not complete."""

    async def rebuild(self, wait: float = 60.0) -> None:
        """Load every entry from the entry store when the index is lost (Unavailable after `wait`)."""

    async def rebuild_window(self) -> tuple[float, float] | None:
        """(when the earliest, when the latest) rebuild began (unix seconds) of those not yet caught
        up on; None when there are none. A change whose process died while a rebuild ran may have
        escaped both the rebuild and its own index update (see `Catalog.catch_up`). A failover Redis
        underwent counts as a rebuild begun when it last held every index change (asynchronous
        replication may have lost those since)."""

    async def caught_up(self, latest: float) -> None:
        """Forget the rebuilds up to the one that began at `latest`; a later one stays to be caught up on."""


class Intents(Protocol):
    """Changes in flight, recorded with their locks (`Leases.hold(intent=...)`)."""

    async def stranded(self) -> list[tuple[str, Intent]]:
        """(token, intent) of every intent whose holder no longer holds its locks (it died)."""

    async def forget(self, token: str, intent: Intent) -> bool:
        """Drop `intent`, recorded under `token`, and what it claimed (see `Leases.hold`); False, and
        nothing dropped, when it is no longer recorded: its change finished after `stranded` read it,
        and its claim is now its entry's reference. The caller holds its locks (so no change of its
        key finishes meanwhile) and has made the index agree with the entry store for its key."""


class Observer(Protocol):
    """What the core reports as it works (metrics), without knowing who counts."""

    def session(self, event: str) -> None:
        """A session was 'created', 'completed' or 'cancelled'."""

    def deduplicated(self, size: int) -> None:
        """A completed upload's content was stored already: `size` bytes not stored again."""
