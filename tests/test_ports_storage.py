"""The blob store and staging ports (service/core/ports.py), one suite run against every implementation.

Each behaviour a port's docstrings promise is tested once here, for the filesystem and the memory
stores alike; an object store joins by adding itself to `IMPLEMENTATIONS`. What only one backend
does (sharded paths, hard links, temporaries, containment of paths) is tested beside it
(tests/test_blobstore.py).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from blake3 import blake3
from s3server import S3Server

from service.core.errors import BlobMissing, CorruptBlob, StagingLost
from service.core.ports import BlobStore, StagingArea
from service.storage.blobs import BlobStore as FileBlobStore
from service.storage.memory import MemoryBlobStore, MemoryStaging
from service.storage.s3 import S3BlobStore, S3Location, S3Staging
from service.storage.staging import StagingArea as FileStaging

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


@dataclass
class Stores:
    """A blob store and the staging area it commits from, with a way to spoil a blob as a failing disk
    would (`damage`) and to make one look placed `seconds` ago (`age`)."""

    blobs: BlobStore
    staging: StagingArea
    damage: Callable[[str, bytes], None]
    age: Callable[[str, float], None]


def filesystem(tmp_path: Path) -> Stores:
    blobs = FileBlobStore(tmp_path / "blobs")

    def damage(digest: str, content: bytes) -> None:
        blobs.path(digest).unlink()
        blobs.path(digest).write_bytes(content)

    def age(digest: str, seconds: float) -> None:
        then = time.time() - seconds
        os.utime(blobs.path(digest), (then, then))

    return Stores(blobs, FileStaging(tmp_path / "partial"), damage, age)


def memory(tmp_path: Path) -> Stores:
    blobs = MemoryBlobStore()

    def damage(digest: str, content: bytes) -> None:
        blobs._blobs[digest] = (content, blobs._blobs[digest][1])

    def age(digest: str, seconds: float) -> None:
        blobs._blobs[digest] = (blobs._blobs[digest][0], time.time() - seconds)

    return Stores(blobs, MemoryStaging(), damage, age)


def s3(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    location = S3Location(server.client(), bucket, "files/")
    blobs = S3BlobStore(location)

    def damage(digest: str, content: bytes) -> None:
        location.put(blobs.key(digest), content)

    def age(digest: str, seconds: float) -> None:
        server.age(bucket, location.prefix + blobs.key(digest), seconds)

    return Stores(blobs, S3Staging(location), damage, age)


IMPLEMENTATIONS: dict[str, Callable[[pytest.FixtureRequest, Path], Stores]] = {
    "filesystem": lambda request, tmp_path: filesystem(tmp_path),
    "memory": lambda request, tmp_path: memory(tmp_path),
    "s3": s3,
}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return IMPLEMENTATIONS[request.param](request, tmp_path)


@pytest.fixture
def staging(stores: Stores) -> StagingArea:
    return stores.staging


@pytest.fixture
def blobs(stores: Stores) -> BlobStore:
    return stores.blobs


def stage(staging: StagingArea, name: str, content: bytes) -> None:
    file = staging.open(name, 0)
    file.write_at(content, 0)
    file.close()


def committed(stores: Stores, content: bytes, name: str = "s") -> str:
    digest = blake3(content).hexdigest()
    stage(stores.staging, name, content)
    stores.blobs.commit(stores.staging, name, digest)
    return digest


async def read_all(blobs: BlobStore, digest: str, first: int, length: int, observe=None) -> list[bytes]:
    return [chunk async for chunk in blobs.read(digest, first, length, observe)]


# Staging


def test_a_staged_upload_holds_what_was_written_at_its_offsets(staging):
    file = staging.open("s", 0)
    file.write_at(b"hello ", 0)
    file.write_at(memoryview(b"world"), 6)
    file.close()
    assert staging.length("s") == 11
    assert staging.digests("s").blake3 == blake3(b"hello world").hexdigest()


@pytest.mark.parametrize("read_back", [False, True])
def test_large_writes_on_blocks_from_any_memory_hold_what_was_written(staging, read_back):
    """Writes on blocks in the file, from memory that starts on one or may not (the local store writes such
    writes past the page cache where the memory allows it, unless they are to be `read_back`), between
    writes off blocks."""
    aligned = mmap.mmap(-1, 1024 * 1024)
    aligned.write(os.urandom(len(aligned)))
    pieces = [os.urandom(4096), aligned, os.urandom(1024 * 1024), b"tail"]
    file = staging.open("s", 0, read_back=read_back)
    offset = 0
    for data in pieces:
        file.write_at(memoryview(data), offset)
        offset += len(data)
    file.close()
    assert staging.digests("s").blake3 == blake3(b"".join(pieces)).hexdigest()


def test_opening_at_zero_makes_or_empties_the_staged_upload(staging):
    stage(staging, "s", b"old content")
    staging.open("s", 0).close()
    assert staging.length("s") == 0


def test_opening_at_an_offset_cuts_off_the_bytes_past_it(staging):
    stage(staging, "s", b"0123456789")
    file = staging.open("s", 4)
    file.write_at(b"ab", 4)
    file.close()
    assert staging.length("s") == 6
    assert staging.digests("s").blake3 == blake3(b"0123ab").hexdigest()


@pytest.mark.parametrize("held", [None, 3])
def test_opening_past_what_is_held_is_staging_lost(staging, held):
    if held is not None:
        stage(staging, "s", b"x" * held)
    with pytest.raises(StagingLost):
        staging.open("s", 5)


def test_synced_bytes_are_kept_for_the_next_writer_though_the_first_never_closed(staging):
    first = staging.open("s", 0)
    first.write_at(b"abc", 0)
    first.sync()  # the core moves the offset after this; then the process dies
    second = staging.open("s", 3)
    second.write_at(b"def", 3)
    second.close()
    assert staging.digests("s").blake3 == blake3(b"abcdef").hexdigest()


def test_truncate_drops_everything_from_the_length_on(staging):
    file = staging.open("s", 0)
    file.write_at(b"abcdef", 0)
    file.truncate(2)
    file.write_at(b"Z", 2)
    file.close()
    file.close()  # closing again does nothing
    assert staging.digests("s").blake3 == blake3(b"abZ").hexdigest()


def test_digests_give_sha256_only_when_asked(staging):
    content = os.urandom(100_000)
    stage(staging, "s", content)
    assert staging.digests("s").sha256 is None
    both = staging.digests("s", sha256=True)
    assert both.blake3 == blake3(content).hexdigest()
    assert both.sha256 == hashlib.sha256(content).hexdigest()


def test_digests_give_md5_only_when_asked(staging):
    content = os.urandom(3000)
    stage(staging, "s", content)
    assert staging.digests("s").md5 is None
    all_three = staging.digests("s", sha256=True, md5=True)
    assert all_three.md5 == hashlib.md5(content).hexdigest()
    assert all_three.sha256 == hashlib.sha256(content).hexdigest()
    assert all_three.blake3 == blake3(content).hexdigest()


def test_concatenate_joins_the_parts_in_the_order_given_and_leaves_them(staging):
    # Sizes across the object store's part size (5 MiB), an empty part, and parts named out of order.
    contents = {"p1": os.urandom(3 * MiB + 1), "p2": os.urandom(6 * MiB + 5), "p3": b"", "p4": b"z"}
    for name, content in contents.items():
        stage(staging, name, content)
    stage(staging, "final", b"old bytes to be replaced")
    order = ["p2", "p4", "p3", "p1"]
    staging.concatenate([(name, len(contents[name])) for name in order], "final")
    whole = b"".join(contents[name] for name in order)
    assert staging.length("final") == len(whole)
    assert staging.digests("final").blake3 == blake3(whole).hexdigest()
    for name, content in contents.items():
        assert staging.length(name) == len(content)
        assert staging.digests(name).blake3 == blake3(content).hexdigest()


async def test_a_concatenated_staged_upload_commits_as_a_blob(stores, blobs, staging):
    first, second = os.urandom(5 * MiB + 1), os.urandom(1234)
    stage(staging, "a", first)
    stage(staging, "b", second)
    staging.concatenate([("a", len(first)), ("b", len(second))], "final")
    digest = blake3(first + second).hexdigest()
    assert blobs.commit(staging, "final", digest) is True
    assert b"".join(await read_all(blobs, digest, 0, len(first + second))) == first + second


def test_concatenate_takes_the_first_length_bytes_of_a_part(staging):
    stage(staging, "a", b"abcdef")
    stage(staging, "b", b"xyz")
    staging.concatenate([("a", 4), ("b", 3)], "final")
    assert staging.digests("final").blake3 == blake3(b"abcdxyz").hexdigest()


@pytest.mark.parametrize("held", [None, 2])
def test_concatenating_a_part_gone_or_short_is_staging_lost(staging, held):
    stage(staging, "a", b"abc")
    if held is not None:
        stage(staging, "b", b"x" * held)
    with pytest.raises(StagingLost):
        staging.concatenate([("a", 3), ("b", 5)], "final")
    assert staging.length("a") == 3


def test_length_remove_and_names(staging):
    assert staging.length("s") is None and staging.names() == []
    stage(staging, "s", b"abc")
    stage(staging, "t", b"")
    assert sorted(staging.names()) == ["s", "t"] and staging.length("t") == 0
    staging.remove("s")
    staging.remove("s")  # removing what is gone does nothing
    assert staging.names() == ["t"] and staging.length("s") is None
    with pytest.raises(StagingLost):
        staging.digests("s")


# Blob store


def test_commit_makes_the_staged_content_a_blob_and_leaves_the_staged_upload(stores, blobs, staging):
    content = os.urandom(5000)
    digest = blake3(content).hexdigest()
    stage(staging, "s", content)
    assert blobs.stat(digest) is None
    assert blobs.commit(staging, "s", digest) is True
    info = blobs.stat(digest)
    assert info is not None and (info.digest, info.size) == (digest, 5000)
    assert staging.length("s") == 5000  # the caller removes it once the upload is recorded


async def test_equal_content_is_stored_once_and_its_reuse_counts_as_placed_now(stores, blobs, staging):
    content = b"the same content"
    digest = committed(stores, content, "a")
    stores.age(digest, 3600)
    assert blobs.stat(digest).modified < time.time() - 3000
    stage(staging, "b", content)
    assert blobs.commit(staging, "b", digest) is False
    assert [blob.digest for blob in blobs.list()] == [digest]
    assert blobs.stat(digest).modified > time.time() - 60


async def test_a_damaged_blob_of_another_size_is_replaced(stores, blobs, staging):
    content = b"the real content"
    digest = committed(stores, content, "a")
    stores.damage(digest, b"trunc")
    stage(staging, "b", content)
    assert blobs.commit(staging, "b", digest) is True
    assert b"".join(await read_all(blobs, digest, 0, len(content))) == content


async def test_store_makes_content_held_in_memory_a_blob(blobs):
    content = os.urandom(5000)
    digest = blake3(content).hexdigest()
    assert blobs.stat(digest) is None
    assert blobs.store(content, digest) is True
    assert b"".join(await read_all(blobs, digest, 0, len(content))) == content


async def test_content_from_memory_equal_to_a_blob_is_stored_once_and_counts_as_placed_now(stores, blobs):
    content = b"the same content"
    digest = committed(stores, content, "a")
    stores.age(digest, 3600)
    assert blobs.store(content, digest) is False
    assert [blob.digest for blob in blobs.list()] == [digest]
    assert blobs.stat(digest).modified > time.time() - 60


async def test_a_damaged_blob_of_another_size_is_replaced_from_memory(stores, blobs):
    content = b"the real content"
    digest = committed(stores, content, "a")
    stores.damage(digest, b"trunc")
    assert blobs.store(content, digest) is True
    assert b"".join(await read_all(blobs, digest, 0, len(content))) == content


async def test_read_streams_a_range_in_bounded_chunks_seen_by_observe(stores, blobs):
    content = os.urandom(5 * MiB + 17)
    digest = committed(stores, content)
    seen: list[bytes] = []
    chunks = await read_all(blobs, digest, 0, len(content), seen.append)
    assert len(chunks) > 1 and b"".join(chunks) == content
    assert b"".join(seen) == content
    assert b"".join(await read_all(blobs, digest, 1000, 3 * MiB)) == content[1000 : 1000 + 3 * MiB]
    assert await read_all(blobs, digest, 10, 0) == []


async def test_reading_a_missing_blob_is_blob_missing_at_the_first_step(blobs):
    stream = blobs.read("0" * 64, 0, 10)
    with pytest.raises(BlobMissing):
        await anext(stream)


async def test_a_blob_that_ends_before_the_range_is_corrupt(stores, blobs):
    content = os.urandom(1000)
    digest = committed(stores, content)
    stores.damage(digest, content[:600])
    with pytest.raises(CorruptBlob):
        await read_all(blobs, digest, 0, len(content))


async def test_delete_and_list(stores, blobs):
    first, second = committed(stores, b"one", "a"), committed(stores, b"second", "b")
    assert sorted((blob.digest, blob.size) for blob in blobs.list()) == sorted([(first, 3), (second, 6)])
    assert blobs.delete(first) is True
    assert blobs.delete(first) is False
    assert blobs.stat(first) is None
    assert [blob.digest for blob in blobs.list()] == [second]
    with pytest.raises(BlobMissing):
        await read_all(blobs, first, 0, 3)


def test_a_staged_upload_reopened_at_its_offset_after_an_unacknowledged_write_past_parts(staging):
    content = os.urandom(12 * MiB + 5)
    acknowledged = 4 * MiB + 3
    file = staging.open("s", 0)
    for first in range(0, acknowledged, MiB):
        file.write_at(content[first : min(first + MiB, acknowledged)], first)
    file.close()
    file = staging.open("s", acknowledged)
    file.write_at(os.urandom(7 * MiB), acknowledged)  # never acknowledged: the writer died ...
    file.sync()  # ... once what it wrote was in the store (a dead process has no upload in flight)
    file = staging.open("s", acknowledged)
    file.write_at(content[acknowledged:], acknowledged)
    file.close()
    assert staging.length("s") == len(content)
    assert staging.digests("s").blake3 == blake3(content).hexdigest()


def test_staged_uploads_written_one_after_another_hold_only_their_own_bytes(staging):
    # The object store reuses its part buffers: a shorter upload after a longer one must not send the rest.
    longer, shorter = os.urandom(19 * MiB + 7), os.urandom(6 * MiB + 5)
    for name, content in (("longer", longer), ("shorter", shorter)):
        file = staging.open(name, 0)
        for first in range(0, len(content), 3 * MiB):
            file.write_at(content[first : first + 3 * MiB], first)
            file.sync()
        file.close()
        file.close()  # closing twice (the chunk writer's job, then its own close) gives nothing back twice
    both = staging.open("both", 0)
    both.write_at(longer, 0)
    both.close()
    assert staging.length("shorter") == len(shorter)
    assert staging.digests("shorter").blake3 == blake3(shorter).hexdigest()
    assert staging.digests("longer").blake3 == blake3(longer).hexdigest()
    assert staging.digests("both").blake3 == blake3(longer).hexdigest()


@pytest.mark.parametrize("cut", [0, 1000, 6 * MiB + 1, 7 * MiB])
def test_a_committed_staged_upload_reopens_at_an_offset(stores, staging, cut):
    content = os.urandom(7 * MiB)
    committed(stores, content)
    file = staging.open("s", cut)
    file.write_at(content[cut:], cut)
    file.close()
    assert staging.length("s") == len(content)
    assert staging.digests("s").blake3 == blake3(content).hexdigest()
