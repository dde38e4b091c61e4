"""The upload core: sessions from creation to a committed file, independent of any protocol.

A request body is copied into the session's staging file in large writes on a
worker thread, while the event loop receives the next part; the offset in Redis
moves only after the bytes it covers are written. When the offset reaches the
size the content is hashed (as it streamed in, when every byte came to this
process; else by reading the file once), checked against the digest the client
gave, and committed to the catalog. A small body that is the whole upload is not
staged at all: hashed in memory, it becomes the blob in the commit's one trip to a
worker thread (a staging file costs another trip, a create and an unlink); only a
commit that fails stages it, so that the offset can record it.

A part (`NewUpload.part`) is a session like any other, but complete at its size without a file:
its staged bytes wait for `concatenate`, which assembles a final upload from parts written
at the same time on any workers, and commits that as one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

from service.core import names
from service.core.auth import Action, Principal
from service.core.catalog import Catalog
from service.core.chunkwriter import ChunkWriter
from service.core.crashpoints import crash_point
from service.core.digests import ChunkChecksum, ContentHasher, Digests
from service.core.errors import (
    BlobMissing,
    BodyBrokenOff,
    BodyStalled,
    ChecksumMismatch,
    DigestMismatch,
    InconsistentLength,
    InsufficientStorage,
    InvalidConcatenation,
    InvalidRequest,
    LostLease,
    OffsetMismatch,
    SessionBusy,
    SessionCompleted,
    SessionNotFound,
    StagingLost,
    StorageFull,
    Unavailable,
    UploadRestarted,
    UploadTooLarge,
)
from service.core.model import Created, Entry, NewUpload, Session
from service.core.ports import Lease, Leases, Observer, SessionStore, StagingArea, session_lock

KEPT_HASHERS = 256
CHEAP_TO_RESEND = 1024 * 1024  # a completing body up to this size is recorded with the completion
MD5 = re.compile(r"[0-9a-f]{32}")


class UploadCore:
    """Sessions belong to the principal that created them: to anyone else they do not exist."""

    def __init__(
        self,
        sessions: SessionStore,
        leases: Leases,
        staging: StagingArea,
        catalog: Catalog,
        observer: Observer,
        max_upload_bytes: int,
        max_open_sessions: int,
        stall_seconds: float,
    ) -> None:
        self.sessions = sessions
        self.leases = leases
        self.staging = staging
        self.catalog = catalog
        self.observer = observer
        self.max_upload_bytes = max_upload_bytes
        self.max_open_sessions = max_open_sessions
        self.stall_seconds = stall_seconds
        # Hash state of sessions whose every byte so far this process received, by session id:
        # (offset hashed up to, hasher). Chunks that keep coming here need no re-read at the end.
        self._hashers: OrderedDict[str, tuple[int, ContentHasher]] = OrderedDict()
        self._writing: set[asyncio.Future[None]] = set()

    async def create(self, request: NewUpload, principal: Principal, requester: str) -> Created:
        """Open a session; one that completes at once comes back with its file. One of no size
        (`request.size` None) takes any length up to the limit until `write` is told the size.

        A session completes at once when it is empty, or, deduplicated, when its `blake3:` digest
        names content stored already in a bucket the principal may read: then no byte need come, and
        the answer says so (`Created.deduplicated`), for no front to infer it. Content stored only
        where the principal may not read leaves the session an ordinary one, after the same work
        as for content stored nowhere: nothing tells the two apart.

        `requester` names whose open sessions count against the limit: the token, or the
        client's address when the service is open.
        """
        names.check_upload(
            request.bucket, request.key, request.mime_type, request.size, request.digest, request.metadata
        )
        if request.part and request.digest is not None:
            raise InvalidRequest("a part is hashed only with the others: give the digest to the final upload")
        session_id = names.check_session_id(request.session_id) if request.session_id else names.new_session_id()
        principal.require("write", request.bucket)
        if request.size is not None:
            self.check_size(request.size)
        session = await self.sessions.create(
            session_id,
            request.bucket,
            request.key,
            request.mime_type,
            request.size if request.size is not None else self.max_upload_bytes,
            request.digest,
            principal.name,
            principal.name if principal.name is not None else f"address:{requester}",
            self.max_open_sessions,
            request.metadata,
            length_deferred=request.size is None,
            part=request.part,
        )
        self.observer.session("created")
        if session.size == 0 and not session.length_deferred:
            result = await self.write(session.id, principal, empty_body(), upload_offset=None, content_length=0)
            return Created(session, result) if isinstance(result, Entry) else Created(result)
        whole = not session.length_deferred and not session.part  # a part makes no file of its own
        if whole and session.digest is not None and session.digest.startswith("blake3:"):
            digest = session.digest.removeprefix("blake3:")
            if await self.catalog.held_in(digest, principal.buckets_for("read")):
                entry = await self._complete_stored(session, digest)
                return Created(session, entry, deduplicated=entry is not None)
        return Created(session)

    async def _complete_stored(self, session: Session, digest: str) -> Entry | None:
        """Complete a new session with the content `digest` that the blob store holds already; None when
        that content went meanwhile (its last entry deleted): the session stays open for the bytes."""
        session, lease = await self.sessions.begin_write(session.id)
        try:
            entry = _entry(session, digest)
            try:
                await self.catalog.link(entry)
            except BlobMissing:
                return None
            await self.sessions.advance(session, lease, session.size, complete=True)
        finally:
            await lease.release()
        self.observer.session("completed")
        self.observer.deduplicated(session.size)
        return entry

    async def status(self, session_id: str, principal: Principal, action: Action = "read") -> Session:
        """The session, for a principal allowed `action` on its bucket (a protocol whose clients
        ask where to resume before they write checks `write`)."""
        session = await self.sessions.get(names.check_session_id(session_id))
        _check_access(session, principal, action)
        return session

    async def write(
        self,
        session_id: str,
        principal: Principal,
        body: AsyncIterator[bytes],
        *,
        upload_offset: int | None,
        content_length: int | None,
        size: int | None = None,
        check: ChunkChecksum | None = None,
        last: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> Session | Entry:
        """Append one chunk; returns the session, or the file when this chunk completed it (a part
        that this chunk completed comes back as its session, completed).

        `size` declares the size of a session created without one (and must repeat it after).
        `metadata` replaces the session's before the chunk (a front that learns it after the bytes).
        With `last`, a session without a size gets the one its bytes reach when this body ends:
        a body whose length nobody knows before it ends (a multipart form's file) completes it.
        With `check`, the chunk is kept only when it matches (else ChecksumMismatch), so the
        offset moves only once the whole chunk is in and checked: none of a chunk broken off.
        """
        names.check_session_id(session_id)
        async with self._held(session_id, principal) as (session, lease):
            if upload_offset is not None and upload_offset != session.offset:
                raise OffsetMismatch(
                    f"Upload-Offset {upload_offset} is not the session's offset {session.offset}",
                    offset=session.offset,
                )
            if size is not None:
                session = await self._declare_size(session, lease, size)
            if metadata is not None and metadata != session.metadata:
                session = await self.sessions.declare_metadata(session, lease, names.check_metadata(metadata))
            remaining = session.size - session.offset
            if content_length is not None and content_length > remaining:
                raise _too_large(session, content_length)
            chunks = _until_stalled(body, self.stall_seconds)
            try:
                session, received, hasher, content = await self._receive(
                    session,
                    lease,
                    chunks,
                    checkpoints=content_length is not None and check is None,
                    check=check,
                    last=last,
                )
            except StagingLost:
                # The acknowledged bytes are gone (a partial file removed by hand, say): start again at 0.
                await self.sessions.advance(session, lease, 0, release=True)
                self._hashers.pop(session.id, None)
                raise UploadRestarted(
                    f"the partial data of this upload ({session.offset} bytes) was lost; "
                    "the session starts again at offset 0",
                    offset=0,
                ) from None
            if received < session.size or session.length_deferred:
                return session
            if session.part:
                session = await self.sessions.advance(session, lease, session.size, complete=True)
                self.observer.session("completed")
                return session
            async with lease.kept_alive():
                return await self._complete(session, lease, hasher, content)

    async def concatenate(
        self, session_id: str, part_ids: Sequence[str], principal: Principal, *, md5: str | None = None
    ) -> Entry:
        """Fill the open session `session_id` with the content of the completed parts `part_ids`, in
        this order, and commit it as its file; then the parts are gone.

        The session (created first, with a size or without) has no bytes of its own. Every part
        must be a part of this principal's (else SessionNotFound), complete, named once, and
        together they must make the session's size when it has one (else InvalidConcatenation).
        The content is hashed once: should it not match the session's digest or `md5` (hex),
        DigestMismatch. Any error before the commit consumes nothing: the session stays open and
        the parts stay, to be concatenated again. The session records its parts before the
        commit and the parts go only after it, so a retry after a crash anywhere completes it.

        The parts are held (their writer leases) from the copy to their removal: another final
        upload naming one, or its cancellation, meanwhile is SessionBusy, so a part goes into
        one file at most, and a part whose cancellation was answered goes into none.
        """
        names.check_session_id(session_id)
        ids = tuple(names.check_session_id(part_id) for part_id in part_ids)
        _check_part_list(session_id, ids)
        if md5 is not None and not MD5.fullmatch(md5 := md5.lower()):
            raise InvalidRequest("md5 must be the content's MD5 digest in 32 hex digits")
        async with self._held(session_id, principal) as (final, lease):
            parts = await self._parts(final, ids, principal)
            size = sum(part.size for part in parts)
            async with self._completed_held(ids), lease.kept_alive():
                digests = await self._assemble(final, parts, md5)
                final = await self.sessions.assembled(final, lease, size, ids)
                entry = await self._record(final, digests)
                await self._completed(final, lease)
                for part in parts:
                    await self.sessions.delete(part.id)
                    await asyncio.to_thread(self.staging.remove, part.id)
        return entry

    async def _parts(self, final: Session, ids: tuple[str, ...], principal: Principal) -> list[Session]:
        """The sessions of the parts `ids` of the final upload `final`, checked (see `concatenate`)."""
        if final.part:
            raise InvalidConcatenation("a part cannot be a final upload")
        if final.offset and final.parts != ids:
            raise InvalidConcatenation(
                f"the upload has {final.offset} bytes of its own already: only an empty one can be concatenated"
            )
        parts = []
        for part_id in ids:  # every one found first: another's part is unknown whatever the others are
            parts.append(part := await self.sessions.get(part_id))
            _check_access(part, principal, "write")
        for part in parts:
            if not part.part:
                raise InvalidConcatenation(f"upload {part.id} is not a part of a concatenation")
            if not part.completed:
                raise InvalidConcatenation(
                    f"part {part.id} is not complete ({part.offset} of {_size_text(part)} bytes)"
                )
        size = sum(part.size for part in parts)
        if not final.length_deferred and size != final.size:
            raise InvalidConcatenation(f"the parts hold {size} bytes in all, not the upload's size of {final.size}")
        self.check_size(size)
        return parts

    async def _assemble(self, final: Session, parts: list[Session], md5: str | None) -> Digests:
        """Stage the parts' content, in order, as the final upload's, and hash it once; checked
        against the digests the client gave (on a mismatch the staged copy goes, the parts stay)."""
        try:
            await asyncio.to_thread(self.staging.concatenate, [(part.id, part.size) for part in parts], final.id)
            digests = await asyncio.to_thread(self.staging.digests, final.id, _wants_sha256(final), md5 is not None)
        except StagingLost as error:
            await asyncio.to_thread(self.staging.remove, final.id)
            raise SessionNotFound(f"the data of a part is gone (cancelled or expired meanwhile): {error}") from None
        except StorageFull as error:
            await asyncio.to_thread(self.staging.remove, final.id)
            raise InsufficientStorage(
                "the data volume is full; nothing was consumed: concatenate again once space is freed"
            ) from error
        outcome = "nothing was consumed: the upload can be concatenated again from the right parts"
        if (mismatch := _digest_mismatch(final, digests, md5, outcome)) is not None:
            await asyncio.to_thread(self.staging.remove, final.id)
            raise mismatch
        return digests

    @contextlib.asynccontextmanager
    async def _held(self, session_id: str, principal: Principal) -> AsyncIterator[tuple[Session, Lease]]:
        """The session, checked for `write` by `principal`, with its writer lease, let go at the end; a
        lease lost meanwhile is SessionBusy. Another principal's session is SessionNotFound whatever
        its state (busy, completed), so that nothing tells it from an unknown one."""
        with self._in_flight():
            try:
                session, lease = await self.sessions.begin_write(session_id)
            except (SessionBusy, SessionCompleted):
                _check_access(await self.sessions.get(session_id), principal, "write")
                raise
            try:
                _check_access(session, principal, "write")
                yield session, lease
            except LostLease as error:
                raise SessionBusy(
                    f"the upload lost its hold on the session ({error}); check the offset and resume"
                ) from error
            finally:
                await lease.release()

    @contextlib.asynccontextmanager
    async def _completed_held(self, session_ids: Sequence[str]) -> AsyncIterator[None]:
        """Hold the writer leases of completed sessions (which `begin_write` no longer takes), kept
        alive, so that no other request consumes or cancels them meanwhile; SessionBusy when one is
        held already. The caller has checked that they are the principal's."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.leases.hold(*map(session_lock, session_ids), wait=0))
            except Unavailable:
                raise SessionBusy(
                    "another request is concatenating or cancelling this upload; retry when it is done"
                ) from None
            yield

    def check_size(self, size: int) -> None:
        """UploadTooLarge when `size` is over the service's limit."""
        if size > self.max_upload_bytes:
            raise UploadTooLarge(
                f"size {size} is over this service's limit of {self.max_upload_bytes} bytes",
                limit=self.max_upload_bytes,
            )

    async def _declare_size(self, session: Session, lease: Lease, size: int) -> Session:
        """The session with its size set now, if it had none; a size it has already must be repeated."""
        if not session.length_deferred:
            if size != session.size:
                raise InconsistentLength(f"the upload's size is {session.size} already; it cannot become {size}")
            return session
        self.check_size(size)
        if size < session.offset:
            raise InconsistentLength(f"size {size} is less than the {session.offset} bytes received already")
        return await self.sessions.declare_size(session, lease, size)

    async def settle(self, timeout: float) -> None:
        """Wait up to `timeout` for the writes under way, such as those shutdown has just cut off,
        to record what they received and let go of their sessions (Redis must still be there)."""
        if self._writing:
            await asyncio.wait(set(self._writing), timeout=timeout)

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        done = asyncio.get_running_loop().create_future()
        self._writing.add(done)
        try:
            yield
        finally:
            self._writing.discard(done)
            done.set_result(None)

    async def _receive(
        self,
        session: Session,
        lease: Lease,
        body: AsyncIterator[bytes],
        checkpoints: bool,
        check: ChunkChecksum | None = None,
        last: bool = False,
    ) -> tuple[Session, int, ContentHasher | None, bytes | None]:
        """Copy the body to the staging file: (the session, the bytes now in the file, the hasher, None);
        or, when the body is the whole upload and small, keep it in memory: (the session, its size, the
        hasher, the content), nothing staged (`_complete` stages it only if its commit fails).

        The offset moves past the body, unless the body completed the upload and was small:
        then it moves with the completion, in one step (a commit cut short costs the client
        that little body again; a larger one is recorded first, so that it costs an empty
        request). With a declared length (known to fit) the offset
        also moves while a long body streams in, so a dead process loses little. Without
        one, nothing counts until the body ends, so that a body running past the size is
        refused whole (413). Either way a client that goes away or stalls keeps what arrived.
        A `last` body of a session without a size declares it where it ends.
        """
        hasher = self._hasher_for(session)
        # A part's bytes are read back when its upload is assembled: kept in the page cache for that.
        opened = functools.partial(self.staging.open, session.id, session.offset, read_back=session.part)
        writer = ChunkWriter(opened, session.offset, hasher)
        try:
            try:
                async for chunk in body:
                    if lease.due():
                        await _still_held(lease)
                        await writer.drain()
                        target = writer.flushed if checkpoints else session.offset
                        session = await self.sessions.advance(session, lease, target)
                    if writer.received + len(chunk) > session.size:
                        raise _too_large(session, writer.received + len(chunk) - session.offset)
                    if check is not None:
                        check.update(chunk)
                    await writer.add(chunk)
                if check is not None and not check.matches():
                    raise ChecksumMismatch(
                        f"the chunk's {check.algorithm} checksum does not match its bytes; nothing of it was kept",
                        offset=session.offset,
                    )
                await _still_held(lease)
                if hasher is not None and (content := _whole_in_memory(session, writer)) is not None:
                    hasher.update(content)
                    return session, session.size, hasher, content
                await writer.drain(close=True)
                if last and session.length_deferred:
                    session = await self.sessions.declare_size(session, lease, writer.flushed)
            except (BodyBrokenOff, BodyStalled, asyncio.CancelledError):
                # Keep what arrived (also when shutdown cuts the request off), so the client resumes there;
                # but a chunk with a checksum counts only whole and checked.
                if check is not None:
                    await _cut_back(writer, lease, session.offset)
                    raise
                await _still_held(lease)
                await writer.drain()
                await self.sessions.advance(session, lease, writer.flushed, release=True)
                raise
            except (UploadTooLarge, StorageFull, ChecksumMismatch) as error:
                await _cut_back(writer, lease, session.offset)
                if isinstance(error, StorageFull):
                    raise InsufficientStorage(
                        "the data volume is full; the session is kept at its offset, resume once space is freed",
                        offset=session.offset,
                    ) from error
                raise
            if writer.flushed < session.size:
                session = await self.sessions.advance(session, lease, writer.flushed, release=True)
                if hasher is not None:
                    self._keep_hasher(session, hasher)
            elif writer.flushed - session.offset > CHEAP_TO_RESEND:
                session = await self.sessions.advance(session, lease, writer.flushed)
            return session, writer.flushed, hasher, None
        finally:
            await writer.abandon()
            writer.close()

    def _hasher_for(self, session: Session) -> ContentHasher | None:
        """A hasher that has seen the session's bytes up to its offset, or None (hash the file at the end,
        or never: a part is hashed with the others, once, when they are assembled)."""
        if session.part:
            return None
        if session.offset == 0:
            return ContentHasher(sha256=_wants_sha256(session))
        offset, hasher = self._hashers.pop(session.id, (None, None))
        return hasher if offset == session.offset else None

    def _keep_hasher(self, session: Session, hasher: ContentHasher) -> None:
        self._hashers[session.id] = (session.offset, hasher)
        if len(self._hashers) > KEPT_HASHERS:
            self._hashers.popitem(last=False)

    async def _complete(
        self, session: Session, lease: Lease, hasher: ContentHasher | None, content: bytes | None
    ) -> Entry:
        """Commit the whole content (staged, or `content` held in memory), then mark the session complete;
        should the commit fail, the offset records that every byte is in (content in memory is staged
        first), so that an empty request at the size completes it."""
        try:
            entry = await self._commit(session, hasher, content)
        except DigestMismatch:
            raise  # the session is gone with its data
        except BaseException as failure:
            if session.offset < session.size:
                if content is not None:
                    # Only while the session is still this request's: another that took it over meanwhile
                    # has written (and been acknowledged for) bytes that staging would overwrite.
                    if not await lease.renew():
                        raise LostLease("its lock lease ran out while the content was committed") from failure
                    await self._stage(session, content)
                await self.sessions.advance(session, lease, session.size, release=True)
            raise
        await self._completed(session, lease, staged=content is None)
        return entry

    async def _stage(self, session: Session, content: bytes) -> None:
        """Write the whole upload, held in memory, to its staging file (made anew: no byte of an earlier
        one was acknowledged, the offset being 0)."""
        try:
            await asyncio.to_thread(_write_staged, self.staging, session.id, content)
        except StorageFull as error:
            raise InsufficientStorage(
                "the data volume is full; the session is kept at its offset, resume once space is freed",
                offset=session.offset,
            ) from error

    async def _completed(self, session: Session, lease: Lease, staged: bool = True) -> None:
        """Mark the session complete once its file is committed, and drop its staged bytes (if `staged`)."""
        crash_point("committed")
        await self.sessions.advance(session, lease, session.size, complete=True)
        if staged:
            await asyncio.to_thread(self.staging.remove, session.id)
        self.observer.session("completed")

    async def _commit(self, session: Session, hasher: ContentHasher | None, content: bytes | None) -> Entry:
        if hasher is not None:
            digests = hasher.digests()
        else:
            digests = await asyncio.to_thread(self.staging.digests, session.id, _wants_sha256(session))
        if (mismatch := _digest_mismatch(session, digests, None, "the upload is discarded")) is not None:
            await self.sessions.delete(session.id)
            if content is None:
                await asyncio.to_thread(self.staging.remove, session.id)
            raise mismatch
        return await self._record(session, digests, content)

    async def _record(self, session: Session, digests: Digests, content: bytes | None = None) -> Entry:
        """Commit the session's content, hashed to `digests`, as its file: staged, or `content` in memory."""
        entry = _entry(session, digests.blake3)
        try:
            await self.catalog.commit(entry, session.id if content is None else content)
        except StorageFull as error:
            raise InsufficientStorage(
                "the data volume is full; all the content is kept: once space is freed, resume at the "
                "reported offset (the size: an empty request) to complete the upload",
                offset=session.size,
            ) from error
        return entry

    async def cancel(self, session_id: str, principal: Principal) -> None:
        """Forget the session and its partial data (a completed part's too); a completed file is not touched."""
        names.check_session_id(session_id)
        try:
            async with self._held(session_id, principal) as (session, _):
                await self.sessions.delete(session.id)
                await asyncio.to_thread(self.staging.remove, session.id)
                self.observer.session("cancelled")
        except SessionCompleted:  # the principal's own (`_held` checked); a part may be being concatenated
            async with self._completed_held([session_id]):
                completed = await self.sessions.get(session_id)
                await self.sessions.delete(session_id)
                if completed.part:
                    await asyncio.to_thread(self.staging.remove, session_id)


def _check_part_list(session_id: str, ids: tuple[str, ...]) -> None:
    if not ids:
        raise InvalidConcatenation("a concatenation needs at least one part")
    if len(set(ids)) != len(ids):
        twice = next(part_id for part_id in ids if ids.count(part_id) > 1)
        raise InvalidConcatenation(f"part {twice} is named twice")
    if session_id in ids:
        raise InvalidConcatenation("an upload cannot be a part of itself")


def _size_text(session: Session) -> str:
    return "an undeclared number of" if session.length_deferred else str(session.size)


def _digest_mismatch(session: Session, digests: Digests, md5: str | None, outcome: str) -> DigestMismatch | None:
    """The error for content that is not what the client said it would be (the session's digest,
    or an MD5 given on completion), or None; `outcome` tells the client what became of it."""
    expected = [session.digest.split(":")] if session.digest is not None else []
    if md5 is not None:
        expected.append(["md5", md5])
    for algorithm, value in expected:
        actual = {"blake3": digests.blake3, "sha256": digests.sha256, "md5": digests.md5}[algorithm]
        if actual != value:
            return DigestMismatch(
                f"the content's {algorithm} digest is {actual}, not the expected {value}; {outcome}",
                actual=f"{algorithm}:{actual}",
            )
    return None


def _check_access(session: Session, principal: Principal, action: Action) -> None:
    if not principal.open and session.owner != principal.name:
        raise SessionNotFound()
    principal.require(action, session.bucket)


async def _until_stalled(body: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The body's chunks, or BodyStalled when the client sends nothing for `seconds`.

    One timer per body, not one per chunk (a GiB arrives in thousands of them): each chunk
    only notes the time, and the timer, when it comes due, looks whether the body has
    been waited on for `seconds` since; if not, it sets itself again for when it could be.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None, "a body is read inside a task"
    chunks = aiter(body)
    waiting_since: float | None = None
    stalled = False
    timer: asyncio.TimerHandle

    def check() -> None:
        nonlocal timer, stalled
        if waiting_since is not None and loop.time() - waiting_since >= seconds:
            stalled = True
            task.cancel()
        else:
            timer = loop.call_at((waiting_since or loop.time()) + seconds, check)

    timer = loop.call_at(loop.time() + seconds, check)
    try:
        while True:
            waiting_since = loop.time()
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if stalled and task.uncancel() == 0:
                    raise BodyStalled(
                        f"the client sent nothing for {seconds:g} s; what arrived before is kept"
                    ) from None
                raise
            waiting_since = None
            yield chunk
    finally:
        timer.cancel()


async def _cut_back(writer: ChunkWriter, lease: Lease, offset: int) -> None:
    """Stop the body's writes and drop what it wrote past `offset`, the last acknowledged byte;
    only while the session is still held (another writer's bytes are not this one's to cut)."""
    await writer.abandon()
    await _still_held(lease)
    await writer.truncate(offset)


async def _still_held(lease: Lease) -> None:
    """Renew the session's lease if it is due, before touching the staging file again.

    A body may pause for longer than the lease (up to the stall limit); by then another
    request may have taken the session over, and writing or truncating would spoil its data.
    """
    if lease.due() and not await lease.renew():
        raise LostLease("its lock lease ran out while the body paused")


def _whole_in_memory(session: Session, writer: ChunkWriter) -> bytes | None:
    """The content of an upload that this body brought whole, small, and still in memory; else None."""
    small = session.offset == 0 and session.size <= CHEAP_TO_RESEND and writer.received == session.size
    if not small or session.part or session.length_deferred:
        return None
    return writer.held()


def _write_staged(staging: StagingArea, name: str, content: bytes) -> None:
    staged = staging.open(name, 0)
    try:
        staged.write_at(content, 0)
    finally:
        staged.close()


def _entry(session: Session, digest: str) -> Entry:
    """The file a completed session makes, of the content `digest` (BLAKE3 hex)."""
    return Entry(
        bucket=session.bucket,
        key=session.key,
        mime_type=session.mime_type,
        bytes=session.size,
        created_at=int(time.time()),
        digest=digest,
        metadata=dict(session.metadata),
    )


def _wants_sha256(session: Session) -> bool:
    return session.digest is not None and session.digest.startswith("sha256:")


def _too_large(session: Session, length: int) -> UploadTooLarge:
    remaining = session.size - session.offset
    if session.length_deferred:  # `size` is the service's limit, not a size the client gave
        return UploadTooLarge(
            f"the upload would pass this service's limit of {session.size} bytes "
            f"(offset {session.offset}, {remaining} bytes remain); nothing of this body was kept",
            offset=session.offset,
        )
    return UploadTooLarge(
        f"this chunk of {length} bytes would run past the upload's size of {session.size} "
        f"(offset {session.offset}, {remaining} bytes remain); nothing of it was kept",
        offset=session.offset,
    )


async def empty_body() -> AsyncIterator[bytes]:
    """A request body of no bytes: what a front passes to `write` to declare or complete without data."""
    return
    yield
