"""The blob store, staging and entry ports on an S3-compatible object store (botocore, blocking like the ports).

Layout under `<prefix>` in one bucket:

  blobs/<digest>                       content by its BLAKE3 digest, placed by a server-side copy
  entries/<bucket>/<sha256(key)>.json  one entry per bucket/key, as on the data volume
  partial/<name>/whole                 a staged upload: the multipart upload's key, and once finished
                                       (for hashing or a commit) the whole content as one object
  partial/<name>/tail-<n>-<start>      a record of the staged upload: its first n parts end at byte
                                       `start`, and the object holds the bytes after them (fewer than a
                                       part); its metadata names the multipart upload

S3 parts are at least 5 MiB but the last. A staged file keeps the bytes past its last part in a buffer
of PART_GOAL bytes and uploads it as a part whenever it is full, up to PARTS_IN_FLIGHT at once; the
buffers in flight and the one being filled are at most PARTS_IN_FLIGHT (each reused: a BufferPool),
so a full buffer waits for a part to land before the next bytes are held. `sync` makes what was
written durable, as the core asks before it moves the offset: it waits for the parts in flight, sends
what is held as a part when S3 takes one (5 MiB or more), else writes it as the record's tail; then the
record says so. A chunk of 8 MiB thus goes up once, as one part, where rewriting a tail object on every
write sent it about three times.

Records are kept after later parts are uploaded, since a part cannot be read back: reopened at an
offset (the acknowledged one, after a write that went further and never was), the staged upload
starts again from the last record at or before it, which holds every acknowledged byte past its
parts. Later records are then garbage and removed, and later parts are uploaded anew over them.
Earlier ones stay true, and are deleted SPARE_RECORDS at a time in one request: a chunk then costs a
listing, its record read, its part and its new record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import re
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import ValidationError

from service.config import ConfigError
from service.core.buffers import BufferPool
from service.core.digests import ContentHasher, Digests
from service.core.errors import BlobMissing, CorruptBlob, OutsideRoot, StagingLost, StorageUnavailable
from service.core.model import BlobInfo, Entry
from service.core.ports import Observe, StagingArea
from service.storage.leanmodels import lean_session
from service.storage.partbuffers import PartBody

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, CopySourceTypeDef, ObjectIdentifierTypeDef

DIGEST = re.compile(r"[0-9a-f]{64}")
TAIL = re.compile(r"tail-(\d+)-(\d+)")
PART_SIZE = 5 * 1024 * 1024  # the smallest part S3 takes (but the last)
PART_GOAL = 8 * 1024 * 1024  # the part uploaded while a body streams in: one 8 MiB chunk is one part
PARTS_IN_FLIGHT = 2
# One staged file's buffers: its parts in flight and the one it fills.
BUFFERS = BufferPool(bytearray, PART_GOAL, PARTS_IN_FLIGHT)
# Part uploads of every staged file of the process: each file has at most PARTS_IN_FLIGHT in it.
UPLOADERS = ThreadPoolExecutor(16, thread_name_prefix="files-s3-part")
COPY_LIMIT = 5 * 1024**3  # the largest object one CopyObject copies
READ_SIZE = 2 * 1024 * 1024
UPLOAD_ID = "upload-id"  # metadata of a tail: the multipart upload it continues
# Records before the one a staged upload is reopened from are left until there are this many, then deleted
# in one request: a chunk costs one request less (see S3Staging.open).
SPARE_RECORDS = 8
DELETED_AT_ONCE = 1000  # the most keys one DeleteObjects takes
# Each part goes with its CRC32, which the store checks, and a staged upload's multipart upload says so when
# it begins, as boto3's own managed upload does: the store then keeps a checksum of the parts' checksums.
# Begun without one, moto completes it by copying every byte twice more into a CRC over the whole object:
# 4.2-5.0 s of its CPU for 1 GiB, against 1.9-2.8 s.
CHECKSUM: Final = "CRC32"
# Few retries and a short connect timeout: a store out of reach (refused, reset, no route) is told to the
# client (503, it resumes) within seconds, not after botocore's minutes. The read timeout is long: completing
# or copying a multi-GiB object is one request the store may take a minute to answer (moto takes longer).
CLIENT_CONFIG = Config(
    connect_timeout=5, read_timeout=300, retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32
)
# Errors of reach (nothing answered, the connection broke) and the store's own "not now" answers.
OUTAGES = (BotoConnectionError, HTTPClientError, IncompleteReadError)
BUSY = frozenset({"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"})

Function = TypeVar("Function", bound=Callable[..., Any])
Class = TypeVar("Class", bound=type)


def _outage(error: Exception) -> StorageUnavailable | None:
    """The StorageUnavailable that `error` means, or None when it is no outage (a missing key, a refusal)."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        return StorageUnavailable(f"the object store answered {code}") if code in BUSY else None
    if isinstance(error, OUTAGES):
        return StorageUnavailable(f"the object store did not answer: {error}")
    return None


@contextlib.contextmanager
def _outages_told() -> Iterator[None]:
    """Raise the store's outages inside as StorageUnavailable; every other error as it is."""
    try:
        yield
    except Exception as error:
        outage = _outage(error)
        if outage is None:
            raise
        raise outage from error


def _in_reach(function: Function) -> Function:
    """`function` (plain, generator or async generator) with the store's outages raised as StorageUnavailable."""
    if inspect.isasyncgenfunction(function):

        @functools.wraps(function)
        async def streamed(*arguments: Any, **keywords: Any) -> AsyncGenerator[Any, None]:
            with _outages_told():
                async with contextlib.aclosing(function(*arguments, **keywords)) as items:
                    async for item in items:
                        yield item

        return streamed  # type: ignore[return-value]
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def listed(*arguments: Any, **keywords: Any) -> Iterator[Any]:
            with _outages_told(), contextlib.closing(function(*arguments, **keywords)) as items:
                yield from items

        return listed  # type: ignore[return-value]

    @functools.wraps(function)
    def called(*arguments: Any, **keywords: Any) -> Any:
        with _outages_told():
            return function(*arguments, **keywords)

    return called  # type: ignore[return-value]


def reached(cls: Class) -> Class:
    """The one place botocore's errors of reach become the domain's: every public method of a port class."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _in_reach(member))
    return cls


class S3Location:
    """A bucket and a key prefix in it, with the client that reaches them."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def check(self) -> None:
        """Raise a one-line ConnectionError when the bucket cannot be reached (missing, or bad credentials)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            meaning = {"403": "access denied (check the AWS_* credentials)", "404": "no such bucket"}.get(code, code)
            raise ConnectionError(f"cannot use S3 bucket {self.bucket!r}: {meaning}") from None
        except BotoCoreError as error:  # no credentials, an endpoint that does not answer
            raise ConnectionError(f"cannot use S3 bucket {self.bucket!r}: {error}") from None

    def url(self, key: str) -> str:
        """Where `key` lies, for a person: s3://<bucket>/<prefix><key>."""
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def keys(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        """Every object (or with `delimiter`, every common prefix) under `prefix`, page by page."""
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if delimiter is not None:
            arguments["Delimiter"] = delimiter
        for page in self.client.get_paginator("list_objects_v2").paginate(**arguments):
            yield from page.get("CommonPrefixes" if delimiter else "Contents", [])  # type: ignore[misc]

    def uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every multipart upload begun under `prefix` (each `Key` the whole key), page by page."""
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            yield from page.get("Uploads", [])  # type: ignore[misc]

    def idle(self, upload: dict[str, Any]) -> float:
        """The seconds since the multipart upload `upload` (as `uploads` lists it) last took a part, or
        began, by the store's clock (the Date of its answer): ours need not agree with it."""
        latest: datetime = upload["Initiated"]
        now = latest
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
        for page in pages:
            now = max(now, parsedate_to_datetime(page["ResponseMetadata"]["HTTPHeaders"]["date"]))
            latest = max([latest, *(part["LastModified"] for part in page.get("Parts", []))])
        return (now - latest).total_seconds()

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key))
        except ClientError as error:
            if _missing(error):
                return None
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except ClientError as error:
            if _missing(error):
                return None
            raise

    def put(self, key: str, data: bytes | PartBody, metadata: dict[str, str] | None = None) -> None:
        body = cast(bytes, data)  # botocore takes a file as it takes bytes
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body, Metadata=metadata or {})

    def copy(self, source: CopySourceTypeDef, key: str, extra_args: dict[str, Any] | None = None) -> None:
        """A managed copy to `key` (the whole key) of any size, in parts when large, as boto3's `client.copy`
        makes it; s3transfer is imported only when one is made (rare: a quarantine, a blob over 5 GiB)."""
        from s3transfer.manager import TransferManager

        with TransferManager(self.client) as manager:
            manager.copy(dict(source), self.bucket, key, extra_args=extra_args).result()

    def abort(self, key: str, upload_id: str) -> None:
        """Abort the multipart upload at `key` (the whole key); one gone already is nothing to abort."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as error:
            if not _missing(error):
                raise

    def delete(self, key: str) -> bool:
        """Delete the object; False when there was none."""
        if self.head(key) is None:
            return False
        self.discard(key)
        return True

    def discard(self, key: str) -> None:
        """Delete the object, if there is one: one request where `delete` takes two (S3 deletes what is
        not there without a complaint)."""
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def discard_all(self, keys: Sequence[str]) -> None:
        """Delete the objects (those not there too) in one DeleteObjects per thousand, not one request
        each; its answer lists the keys it failed to delete, raised as the first one's error."""
        for first in range(0, len(keys), DELETED_AT_ONCE):
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": self.prefix + key} for key in keys[first : first + DELETED_AT_ONCE]
            ]
            answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if failed := answer.get("Errors"):
                raise ClientError(
                    {"Error": {"Code": failed[0].get("Code", ""), "Message": failed[0].get("Message", "")}},
                    "DeleteObjects",
                )


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


@reached
class S3StagedFile:
    """A staged upload open for writing: the bytes past its last part in a buffer, parts uploaded as they
    fill (see the module's docstring). After a failure it writes nothing more: its bytes were never
    acknowledged, and `close` must not wait on a store out of reach."""

    def __init__(self, area: S3Staging, name: str, upload_id: str, parts: int, start: int, tail: bytes) -> None:
        self._area = area
        self._name = name
        self._upload_id = upload_id
        self._parts = parts  # uploaded, or in flight
        self._start = start  # the byte where the held bytes begin
        # The held bytes are the buffer's first `_filled`. It is taken when a byte is to be held, and with the
        # parts in flight they are at most PARTS_IN_FLIGHT: a full buffer waits for a part to land first.
        self._buffer: bytearray | None = None
        self._filled = 0
        self._recorded = (parts, start, len(tail))  # what the last record written says
        self._in_flight: list[Future[None]] = []
        self._failed = False
        self._closed = False
        if tail:  # shorter than a part
            self._hold()[: len(tail)] = tail
            self._filled = len(tail)

    def write_at(self, data: bytes | memoryview, offset: int) -> None:
        if offset != self._start + self._filled:
            raise ValueError(f"staged upload {self._name}: a write at {offset} is not at its end")
        data = memoryview(data).cast("B")
        while data:
            piece = data[: PART_GOAL - self._filled]
            end = self._filled + len(piece)
            self._hold()[self._filled : end] = piece
            self._filled, data = end, data[len(piece) :]
            if self._filled == PART_GOAL:
                self._send_part()

    def sync(self) -> None:
        if self._filled >= PART_SIZE:
            self._send_part()
        self._settle()
        state = (self._parts, self._start, self._filled)
        if state != self._recorded:
            held = PartBody(memoryview(self._hold())[: self._filled]) if self._filled else b""
            self._guarded(self._area.put_tail, self._name, self._upload_id, self._parts, self._start, held)
            self._recorded = state

    def truncate(self, length: int) -> None:
        """Within the held bytes, in memory; below them (into parts), from the records, as `open` does."""
        if length >= self._start:
            self._filled = min(self._filled, length - self._start)
            return
        self._settle(raising=False)
        reopened = self._area.open(self._name, length)
        if self._buffer is not None:
            BUFFERS.give(self._buffer)
        self._upload_id, self._parts, self._start = reopened._upload_id, reopened._parts, reopened._start
        self._buffer, self._filled, self._recorded = reopened._buffer, reopened._filled, reopened._recorded
        self._failed = False

    def close(self) -> None:
        """Sync, unless a write failed: then only wait for the parts in flight (a part uploaded after
        another writer took over would overwrite its own). The buffer goes back for the next upload."""
        if self._closed:
            return
        try:
            if self._failed:
                self._settle(raising=False)
            else:
                self.sync()
        finally:
            self._closed = True
            if self._buffer is not None:  # those of parts in flight go back as each is uploaded
                BUFFERS.give(self._buffer)
                self._buffer = None

    def _hold(self) -> bytearray:
        """The buffer of the held bytes, taken (once a part in flight has landed, when PARTS_IN_FLIGHT are)."""
        if self._closed:
            raise ValueError(f"staged upload {self._name} is closed")
        if self._buffer is None:
            self._settle(keep=PARTS_IN_FLIGHT - 1)
            self._buffer = BUFFERS.take()
        return self._buffer

    def _send_part(self) -> None:
        """Upload the held bytes as the next part, in the background; the next ones go to another buffer."""
        buffer, size = self._hold(), self._filled
        self._buffer, self._filled = None, 0
        self._parts += 1
        self._start += size
        self._in_flight.append(UPLOADERS.submit(self._upload, self._upload_id, self._parts, buffer, size))

    def _upload(self, upload_id: str, number: int, buffer: bytearray, size: int) -> None:
        """On an uploader thread: the part from the buffer's first `size` bytes; then the buffer is free."""
        try:
            body = buffer if size == len(buffer) else PartBody(memoryview(buffer)[:size])
            self._area.upload_part(self._name, upload_id, number, body)
        finally:
            BUFFERS.give(buffer)

    def _settle(self, keep: int = 0, raising: bool = True) -> None:
        """Wait until at most `keep` parts are in flight; the first failure is raised (unless not `raising`)."""
        failure: BaseException | None = None
        while len(self._in_flight) > keep:
            try:
                self._in_flight.pop(0).result()
            except Exception as error:  # every part still waited for: none may land after this returns
                failure, self._failed = failure or error, True
                keep = 0
        if failure is not None and raising:
            raise failure

    def _guarded(self, write: Callable[..., None], *arguments: Any) -> None:
        try:
            write(*arguments)
        except Exception:
            self._failed = True
            raise


@reached
class S3Staging:
    """The staging port: each staged upload a multipart upload and its tail (see the module's docstring)."""

    def __init__(self, location: S3Location) -> None:
        self.location = location

    def _key(self, name: str, leaf: str = "") -> str:
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise OutsideRoot(f"not a staging name: {name!r}")
        return f"partial/{name}/{leaf}"

    def _records(self, name: str) -> list[tuple[int, int]]:
        """(parts, start) of each record, in order."""
        found = (TAIL.fullmatch(item["Key"].rsplit("/", 1)[-1]) for item in self.location.keys(self._key(name)))
        return sorted((int(match.group(1)), int(match.group(2))) for match in found if match)

    def _record(self, name: str, parts: int, start: int) -> str:
        return self._key(name, f"tail-{parts}-{start}")

    def open(self, name: str, offset: int, read_back: bool = False) -> S3StagedFile:
        if offset == 0:
            self.remove(name)
            upload = self.location.client.create_multipart_upload(
                Bucket=self.location.bucket,
                Key=self.location.prefix + self._key(name, "whole"),
                ChecksumAlgorithm=CHECKSUM,
            )
            self.put_tail(name, upload["UploadId"], 0, 0, b"")
            return S3StagedFile(self, name, upload["UploadId"], 0, 0, b"")
        records = self._records(name)
        if not records:
            whole = self.location.head(self._key(name, "whole"))
            if whole is None:
                raise StagingLost(f"staged upload {name} is gone, {offset} bytes with it")
            return self._unfinish(name, offset, int(whole["ContentLength"]))
        parts, start = max(((parts, start) for parts, start in records if start <= offset), default=records[0])
        response = self.location.client.get_object(
            Bucket=self.location.bucket, Key=self.location.prefix + self._record(name, parts, start)
        )
        tail = response["Body"].read()
        if not start <= offset <= start + len(tail):
            last = self.location.head(self._record(name, *records[-1]))
            held = records[-1][1] + int(last["ContentLength"]) if last is not None else start + len(tail)
            raise StagingLost(f"staged upload {name} holds {held} bytes, not {offset}")
        upload_id = response["Metadata"][UPLOAD_ID]
        if len(tail) > offset - start:
            tail = tail[: offset - start]
            self.put_tail(name, upload_id, parts, start, tail)
        # Later records (of writes never acknowledged) go now, before a part is uploaded over theirs. Earlier
        # ones are true still and harmless (the last at or before an offset is chosen), so they go only once
        # there are SPARE_RECORDS: deleting the one before on every chunk cost a request per chunk.
        later = [record for record in records if record > (parts, start)]
        earlier = [record for record in records if record < (parts, start)]
        stale = later + earlier if len(earlier) >= SPARE_RECORDS else later
        if stale:
            self.location.discard_all([self._record(name, *record) for record in stale])
        return S3StagedFile(self, name, upload_id, parts, start, tail)

    def _unfinish(self, name: str, offset: int, size: int) -> S3StagedFile:
        """Staged again from its whole object (finished by a commit cut short), cut at `offset`."""
        if offset > size:
            raise StagingLost(f"staged upload {name} holds {size} bytes, not {offset}")
        whole = self.location.prefix + self._key(name, "whole")
        upload_id = self.location.client.create_multipart_upload(Bucket=self.location.bucket, Key=whole)["UploadId"]
        parts = offset // PART_SIZE
        for number in range(1, parts + 1):
            first = (number - 1) * PART_SIZE
            self.location.client.upload_part_copy(
                Bucket=self.location.bucket,
                Key=whole,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.location.bucket, "Key": whole},
                CopySourceRange=f"bytes={first}-{first + PART_SIZE - 1}",
            )
        tail = b""
        if offset > parts * PART_SIZE:
            tail = self.location.client.get_object(
                Bucket=self.location.bucket, Key=whole, Range=f"bytes={parts * PART_SIZE}-{offset - 1}"
            )["Body"].read()
        self.put_tail(name, upload_id, parts, parts * PART_SIZE, tail)
        self.location.discard(self._key(name, "whole"))
        return S3StagedFile(self, name, upload_id, parts, parts * PART_SIZE, tail)

    def upload_part(self, name: str, upload_id: str, number: int, data: bytes | bytearray | PartBody) -> None:
        self.location.client.upload_part(
            Bucket=self.location.bucket,
            Key=self.location.prefix + self._key(name, "whole"),
            UploadId=upload_id,
            PartNumber=number,
            Body=cast(bytes, data),  # botocore takes a bytearray or a file as it takes bytes
            ChecksumAlgorithm=CHECKSUM,
        )

    def put_tail(self, name: str, upload_id: str, parts: int, start: int, data: bytes | PartBody) -> None:
        self.location.put(self._record(name, parts, start), data, {UPLOAD_ID: upload_id})

    def where(self, name: str) -> str:
        return self.location.url(self._key(name))

    def written(self, name: str) -> float | None:
        """Its newest object's LastModified, or when its multipart upload began if it has no object."""
        times: list[float] = [item["LastModified"].timestamp() for item in self.location.keys(self._key(name))]
        if times:
            return max(times)
        whole = self.location.prefix + self._key(name, "whole")
        uploads = self.location.uploads(self._key(name, "whole"))
        return max((upload["Initiated"].timestamp() for upload in uploads if upload["Key"] == whole), default=None)

    def length(self, name: str) -> int | None:
        records = self._records(name)
        if records:
            tail = self.location.head(self._record(name, *records[-1]))
            return None if tail is None else records[-1][1] + int(tail["ContentLength"])
        whole = self.location.head(self._key(name, "whole"))
        return None if whole is None else int(whole["ContentLength"])

    def finish(self, name: str) -> tuple[str, int]:
        """Complete the multipart upload into the whole object (unless done already): its key under the
        bucket, and its size, which the last record tells (the commit asks the store only when the upload
        was finished before)."""
        whole = self.location.prefix + self._key(name, "whole")
        records = self._records(name)
        if not records:
            finished = self.location.head(self._key(name, "whole"))
            if finished is None:
                raise StagingLost(f"staged upload {name} is gone")
            return whole, int(finished["ContentLength"])
        parts, start = records[-1]
        response = self.location.client.get_object(
            Bucket=self.location.bucket, Key=self.location.prefix + self._record(name, parts, start)
        )
        upload_id, tail = response["Metadata"][UPLOAD_ID], response["Body"].read()
        if parts == 0:
            self.location.put(self._key(name, "whole"), tail)
            self.location.abort(whole, upload_id)
        else:
            self._complete(name, upload_id, parts, tail)
        self.location.discard_all([self._record(name, *record) for record in records])
        return whole, start + len(tail)

    def _complete(self, name: str, upload_id: str, parts: int, tail: bytes) -> None:
        """Complete the upload from its first `parts` parts and the tail (a later part is a stale one);
        one completed already (a finish cut short before its tails were removed) is done. Each part is
        named with its checksum when the upload was begun with CHECKSUM (a store that ignored it, or an
        upload begun again by `_unfinish`, lists none), as the store then requires."""
        whole = self.location.prefix + self._key(name, "whole")
        try:
            if tail:
                self.upload_part(name, upload_id, parts + 1, tail)
            listed = list(
                self.location.client.get_paginator("list_parts").paginate(
                    Bucket=self.location.bucket, Key=whole, UploadId=upload_id
                )
            )
        except ClientError as error:
            if _missing(error) and self.location.head(self._key(name, "whole")) is not None:
                return
            raise
        checked = any(page.get("ChecksumAlgorithm") == CHECKSUM for page in listed)
        uploaded: dict[int, CompletedPartTypeDef] = {}
        for page in listed:
            for part in page.get("Parts", []):
                number = part["PartNumber"]
                uploaded[number] = {"PartNumber": number, "ETag": part["ETag"]}
                if checked and "ChecksumCRC32" in part:
                    uploaded[number]["ChecksumCRC32"] = part["ChecksumCRC32"]
        count = parts + 1 if tail else parts
        self.location.client.complete_multipart_upload(
            Bucket=self.location.bucket,
            Key=whole,
            UploadId=upload_id,
            MultipartUpload={"Parts": [uploaded[number] for number in range(1, count + 1)]},
        )

    def digests(self, name: str, sha256: bool = False, md5: bool = False) -> Digests:
        whole, _ = self.finish(name)
        body = self.location.client.get_object(Bucket=self.location.bucket, Key=whole)["Body"]
        hasher = ContentHasher(sha256=sha256, md5=md5)
        while data := body.read(READ_SIZE):
            hasher.update(data)
        return hasher.digests()

    def concatenate(self, parts: Sequence[tuple[str, int]], into: str) -> None:
        """Read each part's whole object and write it to `into` a part's worth at a time, so that each
        write uploads a part. (A server-side part copy would need every part but the last to be a
        multiple of the part size, which parallel parts of any size are not.)"""
        target = self.open(into, 0)
        offset = 0
        for name, length in parts:
            whole, _ = self.finish(name)
            copied = 0
            if length:
                try:
                    body = self.location.client.get_object(
                        Bucket=self.location.bucket, Key=whole, Range=f"bytes=0-{length - 1}"
                    )["Body"]
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") != "InvalidRange":  # an empty part
                        raise
                    body = None
                while body is not None and (data := body.read(PART_SIZE)):
                    target.write_at(data, offset + copied)
                    copied += len(data)
            if copied < length:
                raise StagingLost(f"staged upload {name} holds {copied} bytes, not {length}")
            offset += length
        target.close()

    def remove(self, name: str) -> None:
        whole = self.location.prefix + self._key(name, "whole")
        for upload in list(self.location.uploads(self._key(name, "whole"))):
            if upload["Key"] == whole:
                self.location.abort(whole, upload["UploadId"])
        begun = len(self.location.prefix)
        self.location.discard_all([item["Key"][begun:] for item in self.location.keys(self._key(name))])

    def names(self) -> list[str]:
        """Those with objects, and those with only a multipart upload (begun, then cut short before its
        first tail was written): removing one of a session gone aborts its upload."""
        found = {item["Prefix"].rstrip("/").rsplit("/", 1)[-1] for item in self.location.keys("partial/", "/")}
        begun = len(self.location.prefix + "partial/")
        found.update(upload["Key"][begun:].split("/", 1)[0] for upload in self.location.uploads("partial/"))
        return sorted(found)


@reached
class S3BlobStore:
    """The blob store port: `blobs/<digest>`, each placed by a server-side copy of a finished staged upload."""

    def __init__(self, location: S3Location) -> None:
        self.location = location

    def key(self, digest: str) -> str:
        if not DIGEST.fullmatch(digest):
            raise ValueError(f"not a BLAKE3 hex digest: {digest!r}")
        return f"blobs/{digest}"

    def where(self, digest: str) -> str:
        return self.location.url(self.key(digest))

    def rehash(self, digest: str) -> str:
        try:
            body = self.location.client.get_object(
                Bucket=self.location.bucket, Key=self.location.prefix + self.key(digest)
            )
        except ClientError as error:
            if _missing(error):
                raise BlobMissing(f"no blob {digest}") from None
            raise
        hasher = ContentHasher()
        with contextlib.closing(body["Body"]) as content:
            while data := content.read(READ_SIZE):
                hasher.update(data)
        return hasher.digests().blake3

    def quarantine(self, digest: str) -> str:
        """Copied to `quarantine/<digest>.<time>` in the same bucket, then deleted from the blobs."""
        aside = f"quarantine/{digest}.{int(time.time())}"
        self.location.copy(
            {"Bucket": self.location.bucket, "Key": self.location.prefix + self.key(digest)},
            self.location.prefix + aside,
        )
        self.location.delete(self.key(digest))
        return self.location.url(aside)

    def stat(self, digest: str) -> BlobInfo | None:
        head = self.location.head(self.key(digest))
        return None if head is None else BlobInfo(digest, int(head["ContentLength"]), head["LastModified"].timestamp())

    def commit(self, staging: StagingArea, name: str, digest: str) -> bool:
        """A reused blob is copied onto itself, which makes its LastModified now (S3 has no touch)."""
        if not isinstance(staging, S3Staging) or staging.location.bucket != self.location.bucket:
            raise TypeError("the S3 blob store commits only staged uploads in its own bucket")
        whole, size = staging.finish(name)
        reused = self._held(digest, size)
        self._copy(self.location.prefix + self.key(digest) if reused else whole, digest, size)
        return not reused

    def store(self, content: bytes, digest: str) -> bool:
        """One PutObject; a reused blob is copied onto itself, as by `commit`."""
        if self._held(digest, len(content)):
            self._copy(self.location.prefix + self.key(digest), digest, len(content))
            return False
        self.location.put(self.key(digest), content, {"placed": str(time.time())})
        return True

    def _held(self, digest: str, size: int) -> bool:
        """Whether the blob is there with that size (one of another size is damaged: it is replaced)."""
        existing = self.stat(digest)
        return existing is not None and existing.size == size

    def _copy(self, source: str, digest: str, size: int) -> None:
        """Copy the object `source` (a whole key, of `size` bytes) to the blob `digest`, placed now. The
        store gives the blob a CRC32 of its whole content, which a whole read of it is checked against (the
        staged upload's is one of its parts' checksums, which no read can check, and moto's copy keeps it
        without saying so: every whole read of the blob then failed)."""
        copied: CopySourceTypeDef = {"Bucket": self.location.bucket, "Key": source}
        target = self.location.prefix + self.key(digest)
        placed = {"placed": str(time.time())}
        if size <= COPY_LIMIT:  # one request, nothing left behind if cut short
            self.location.client.copy_object(
                CopySource=copied,
                Bucket=self.location.bucket,
                Key=target,
                MetadataDirective="REPLACE",
                Metadata=placed,
                ChecksumAlgorithm=CHECKSUM,
            )
        else:  # a multipart copy: one cut short is a temporary (S3Temporaries)
            self.location.copy(copied, target, {"MetadataDirective": "REPLACE", "Metadata": placed})

    async def read(
        self, digest: str, first: int, length: int, observe: Observe | None = None
    ) -> AsyncGenerator[bytes, None]:
        """One ranged GetObject, its body read on a worker thread in bounded chunks."""
        key = self.location.prefix + self.key(digest)
        if length == 0:
            if await asyncio.to_thread(self.stat, digest) is None:
                raise BlobMissing(f"no blob {digest}")
            return
        end = first + length
        try:
            response = await asyncio.to_thread(
                self.location.client.get_object, Bucket=self.location.bucket, Key=key, Range=f"bytes={first}-{end - 1}"
            )
        except ClientError as error:
            if _missing(error):
                raise BlobMissing(f"no blob {digest}") from None
            if error.response.get("Error", {}).get("Code") == "InvalidRange":
                raise CorruptBlob(f"blob {digest} ends before byte {first}") from None
            raise
        body = response["Body"]

        def read() -> bytes:
            data = body.read(READ_SIZE)
            if observe is not None:
                observe(data)
            return data

        position = first
        try:
            while position < end:
                data = await asyncio.to_thread(read)
                if not data:
                    raise CorruptBlob(f"blob {digest} ended at byte {position} of {end}")
                position += len(data)
                yield data
        finally:
            body.close()

    def delete(self, digest: str) -> bool:
        return self.location.delete(self.key(digest))

    def url_for(self, digest: str, mime_type: str, expires_in: float) -> str:
        """A presigned GetObject: signed here with the client's credentials, no request to the store."""
        return self.location.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.location.bucket,
                "Key": self.location.prefix + self.key(digest),
                "ResponseContentType": mime_type,
            },
            ExpiresIn=int(expires_in),
        )

    def list(self) -> Iterator[BlobInfo]:
        """Objects not named like blobs are skipped."""
        for item in self.location.keys("blobs/"):
            digest = item["Key"].rsplit("/", 1)[-1]
            if DIGEST.fullmatch(digest):
                yield BlobInfo(digest, int(item["Size"]), item["LastModified"].timestamp())


@reached
class S3EntryStore:
    """The entry store port: one small JSON object per entry, named by a hash of its key."""

    def __init__(self, location: S3Location) -> None:
        self.location = location

    def key(self, bucket: str, key: str) -> str:
        if bucket in ("", ".", "..") or "/" in bucket or "\0" in bucket:
            raise ValueError(f"not a bucket name: {bucket!r}")
        return f"entries/{bucket}/{hashlib.sha256(key.encode()).hexdigest()}.json"

    def where(self, bucket: str, key: str) -> str:
        return self.location.url(self.key(bucket, key))

    def audit(self) -> tuple[list[Entry], list[tuple[str, str]]]:
        found, damaged = [], []
        for item in self.location.keys("entries/"):
            name = item["Key"][len(self.location.prefix) :]
            if not name.endswith(".json"):
                continue
            data = self.location.get(name)
            if data is None:
                continue  # deleted meanwhile
            try:
                entry = Entry.model_validate_json(data)
            except ValidationError as error:
                damaged.append((self.location.url(name), str(error).splitlines()[0]))
                continue
            if self.key(entry.bucket, entry.key) != name:
                damaged.append((self.location.url(name), f"holds {entry.bucket}/{entry.key}, which belongs elsewhere"))
                continue
            found.append(entry)
        return found, damaged

    def get(self, bucket: str, key: str) -> Entry | None:
        data = self.location.get(self.key(bucket, key))
        if data is None:
            return None
        entry = Entry.model_validate_json(data)
        return entry if (entry.bucket, entry.key) == (bucket, key) else None

    def put(self, entry: Entry) -> Entry | None:
        replaced = self.get(entry.bucket, entry.key)
        self.location.put(self.key(entry.bucket, entry.key), entry.model_dump_json().encode())
        return replaced

    def delete(self, bucket: str, key: str) -> bool:
        return self.location.delete(self.key(bucket, key))

    def exists(self, entry: Entry) -> bool:
        return self.get(entry.bucket, entry.key) == entry

    def scan(self, changed_since: float | None = None) -> Iterator[Entry]:
        """By LastModified, the store's clock of the write."""
        for item in self.location.keys("entries/"):
            if not item["Key"].endswith(".json"):
                continue
            if changed_since is not None and item["LastModified"].timestamp() < changed_since:
                continue
            data = self.location.get(item["Key"][len(self.location.prefix) :])
            if data is None:
                continue
            try:
                yield Entry.model_validate_json(data)
            except ValidationError:
                continue


class S3Probe:
    """The store probe of an object store: the bucket answers (HEAD) with these credentials."""

    def __init__(self, location: S3Location) -> None:
        self.location = location

    def probe(self) -> None:
        self.location.check()


@reached
class S3Temporaries:
    """The temporaries port: multipart uploads that are no staged upload's, such as the copy of a blob
    over 5 GiB (`S3BlobStore.commit`) cut short; a staged upload's is aborted with it (`S3Staging.remove`).
    An upload's age is from its newest part, else its `Initiated` (moto's says 2010 for every one), to the
    Date of the store's answer: a copy of many parts may outlast a lease, and is live while its parts go
    up; the store's clock, not ours, dates both."""

    SEPARATOR = "?uploadId="

    def __init__(self, location: S3Location) -> None:
        self.location = location

    def stale(self, cutoff: float) -> list[str]:
        staged = self.location.prefix + "partial/"
        return [
            upload["Key"] + self.SEPARATOR + upload["UploadId"]
            for upload in self.location.uploads("")
            if not upload["Key"].startswith(staged) and self.location.idle(upload) > time.time() - cutoff
        ]

    def remove(self, name: str) -> None:
        key, _, upload_id = name.rpartition(self.SEPARATOR)
        if not key.startswith(self.location.prefix) or not upload_id:
            raise OutsideRoot(f"{name} is no multipart upload of this store")
        self.location.abort(key, upload_id)


def object_store(url: str, endpoint_url: str | None) -> S3Location:
    """The bucket and prefix of `s3://<bucket>[/<prefix>]`, checked to be reachable: a ConfigError in one line
    for a missing bucket or bad credentials, not a stack trace at the first upload."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    # A botocore client, not boto3's: boto3 adds its resources and s3transfer (2 MiB) for nothing used here.
    client = lean_session().create_client("s3", endpoint_url=endpoint_url, config=CLIENT_CONFIG)
    location = S3Location(cast("S3Client", client), bucket, prefix)
    try:
        location.check()
    except ConnectionError as error:
        raise ConfigError(f"FILES_STORAGE_URL={url}: {error}") from None
    return location
