"""Parted uploads: a file announced with its size, sent as parts in any order and in parallel (on any
worker), and completed from the parts the client names, in its order (OpenAI's Uploads API).

Each part is a part session of the upload core, its length known only when its body ends
(`UploadCore.write(last=True)`); completing creates the file's session and concatenates the
named parts into it (`UploadCore.concatenate`: hashed once, the MD5 checked, one blob). Should
that fail (a wrong MD5, a total that is not the size) nothing is consumed: the parts stay and
the upload can be completed again. The upload itself is a record in the `PartedUploadStore`;
the record's status, moved in one step, lets only one request complete or cancel it. Past its
`expires_at` a pending upload is 'expired' (it takes no parts and cannot complete), and the
sweep drops it with its parts.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace

from service.core import names
from service.core.auth import EVERYONE, Principal
from service.core.errors import (
    DigestMismatch,
    FilesError,
    InvalidRequest,
    SessionBusy,
    UploadClosed,
    UploadNotFound,
    UploadTooLarge,
)
from service.core.model import Entry, NewUpload, PartedUpload, Session
from service.core.ports import PartedUploadStore
from service.core.uploads import UploadCore

PENDING, COMPLETED, CANCELLED, EXPIRED = "pending", "completed", "cancelled", "expired"
SWEEP_BATCH = 100
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


class PartedUploads:
    def __init__(self, core: UploadCore, uploads: PartedUploadStore, ttl_seconds: int, max_part_bytes: int) -> None:
        self.core = core
        self.uploads = uploads
        self.ttl_seconds = ttl_seconds
        self.max_part_bytes = max_part_bytes

    async def create(
        self, bucket: str, key: str, mime_type: str, size: int, metadata: Mapping[str, str], principal: Principal
    ) -> PartedUpload:
        """A new pending upload of the file `bucket`/`key`, of `size` bytes; it expires after the TTL."""
        names.check_upload(bucket, key, mime_type, size, None, metadata)
        principal.require("write", bucket)
        self.core.check_size(size)
        now = int(time.time())
        upload = PartedUpload(
            id=secrets.token_hex(16),
            bucket=bucket,
            key=key,
            mime_type=mime_type,
            size=size,
            metadata=dict(metadata),
            owner=principal.name,
            created_at=now,
            expires_at=now + self.ttl_seconds,
            status=PENDING,
        )
        await self.uploads.create(upload)
        return upload

    async def get(self, upload_id: str, principal: Principal) -> PartedUpload:
        """The upload, for its owner (anyone else: UploadNotFound) allowed to write its bucket."""
        if not names.SESSION_ID.fullmatch(upload_id):
            raise UploadNotFound()
        upload = await self.uploads.get(upload_id)
        if not principal.open and upload.owner != principal.name:
            raise UploadNotFound()
        principal.require("write", upload.bucket)
        if upload.status == PENDING and time.time() >= upload.expires_at:
            return replace(upload, status=EXPIRED)
        return upload

    async def add_part(
        self, upload_id: str, principal: Principal, body: AsyncIterator[bytes], requester: str
    ) -> Session:
        """Store `body` as a part of the pending upload (at most `max_part_bytes`: UploadTooLarge); the
        completed part session, whose id names the part. A refused or broken part leaves nothing."""
        upload = await self._pending(upload_id, principal)
        part = NewUpload(upload.bucket, upload.key, upload.mime_type, None, part=True)
        session = (await self.core.create(part, principal, requester)).session
        try:
            result = await self.core.write(
                session.id,
                principal,
                self._at_most(body),
                upload_offset=0,
                content_length=None,
                last=True,
            )
            await self.uploads.add_part(upload.id, session.id, time.time())
        except BaseException:
            with contextlib.suppress(FilesError):
                await self.core.cancel(session.id, principal)
            raise
        assert isinstance(result, Session) and result.completed
        return result

    async def complete(
        self, upload_id: str, part_ids: Sequence[str], principal: Principal, requester: str, md5: str | None = None
    ) -> tuple[PartedUpload, Entry]:
        """The file of the parts `part_ids` in this order (each a part of this upload, once; together
        the upload's size), checked against `md5` when given; the upload closed as completed and
        its parts gone. On any refusal nothing is consumed: it can be completed again."""
        upload = await self._pending(upload_id, principal)
        for part_id in part_ids:
            if part_id not in upload.parts:
                raise InvalidRequest(f"part {part_id[:80]!r} is not a part of this upload", param="part_ids")
        if upload.size == 0:  # its session completes at once, as an empty file: nothing is concatenated
            await self._check_empty(part_ids, principal, md5)
        new = NewUpload(upload.bucket, upload.key, upload.mime_type, upload.size, metadata=upload.metadata)
        created = await self.core.create(new, principal, requester)
        session, entry = created.session, created.file
        if entry is None:
            try:
                entry = await self.core.concatenate(session.id, part_ids, principal, md5=md5)
            except BaseException:
                with contextlib.suppress(FilesError):
                    await self.core.cancel(session.id, principal)
                raise
        completed = await self.uploads.close(upload.id, COMPLETED)
        await self._drop_parts(completed.parts, principal)  # those not concatenated (the others are gone)
        return completed, entry

    async def cancel(self, upload_id: str, principal: Principal) -> PartedUpload:
        """Drop the pending upload's parts and close it as cancelled. SessionBusy, the upload left
        pending, when a completion holds a part: closed under it, the upload would say cancelled
        while the completion stored its file."""
        upload = await self._pending(upload_id, principal)
        if not await self._drop_parts(upload.parts, principal):
            raise SessionBusy("a completion of this upload is under way")
        cancelled = await self.uploads.close(upload_id, CANCELLED)
        await self._drop_parts(cancelled.parts - upload.parts, principal)  # those added meanwhile
        return cancelled

    async def sweep(self, now: float) -> int:
        """Drop the uploads whose `expires_at` is `now` or earlier, and the parts of those not closed;
        the number dropped. One whose parts a completion holds (it began before the expiry) is kept
        for a later sweep: forgotten now, that completion would store its file and answer 404."""
        dropped = 0
        kept: set[str] = set()
        while expired := [
            upload_id for upload_id in await self.uploads.expired(now, SWEEP_BATCH + len(kept)) if upload_id not in kept
        ]:
            for upload_id in expired:
                try:
                    upload = await self.uploads.get(upload_id)
                except UploadNotFound:
                    pass
                else:
                    if upload.status == PENDING and not await self._drop_parts(upload.parts, EVERYONE):
                        kept.add(upload_id)
                        continue
                await self.uploads.forget(upload_id)
                dropped += 1
        return dropped

    async def _check_empty(self, part_ids: Sequence[str], principal: Principal, md5: str | None) -> None:
        """What `UploadCore.concatenate` checks, for parts that must make an empty file."""
        for part_id in part_ids:
            if (await self.core.status(part_id, principal, "write")).offset:
                raise InvalidRequest("the parts are more than the upload's 0 bytes", param="part_ids")
        if md5 is not None and md5.lower() != EMPTY_MD5:
            raise DigestMismatch(f"the content's md5 digest is {EMPTY_MD5}, not the expected {md5[:40]}")

    async def _pending(self, upload_id: str, principal: Principal) -> PartedUpload:
        upload = await self.get(upload_id, principal)
        if upload.status != PENDING:
            raise UploadClosed(f"the upload is {upload.status} already")
        return upload

    async def _drop_parts(self, part_ids: frozenset[str] | set[str], principal: Principal) -> bool:
        """Cancel the parts (those gone already are nothing to drop); False when one is held (SessionBusy)."""
        dropped = True
        for part_id in part_ids:
            try:
                await self.core.cancel(part_id, principal)
            except SessionBusy:
                dropped = False
            except FilesError:
                pass
        return dropped

    async def _at_most(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in body:
            received += len(chunk)
            if received > self.max_part_bytes:
                raise UploadTooLarge(f"a part may hold at most {self.max_part_bytes} bytes", limit=self.max_part_bytes)
            yield chunk
