"""The filesystem stores alone, in what only they do (the ports' promises: tests/test_ports_storage.py):
sharded paths, hard links, temporaries, containment of paths, hashing files."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from blake3 import blake3

from service.core.digests import ContentHasher, hash_file
from service.core.errors import OutsideRoot, StorageFull
from service.core.model import Entry
from service.storage.blobs import READ_BUDGET, READ_SIZE, BlobStore
from service.storage.durable import contained, write_atomic
from service.storage.entries import EntryStore
from service.storage.staging import StagingArea


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def staging(tmp_path: Path) -> StagingArea:
    return StagingArea(tmp_path / "partial")


def stage(staging: StagingArea, name: str, content: bytes) -> Path:
    file = staging.open(name, 0)
    file.write_at(content, 0)
    file.close()
    return staging.path(name)


def test_place_names_the_blob_by_its_digest_and_shards_it(blobs, staging):
    content = b"hello blobs"
    digest = blake3(content).hexdigest()
    assert blobs.place(stage(staging, "s1", content), digest) is True
    path = blobs.path(digest)
    assert path == blobs.root / digest[:2] / digest[2:4] / digest
    assert path.read_bytes() == content
    assert [blob.digest for blob in blobs.list()] == [digest]


@pytest.mark.anyio
async def test_a_download_reads_while_every_io_thread_is_taken(blobs, staging):
    """Uploads waiting on fsync can take all the I/O threads; a download's reads do not queue behind them."""
    content = os.urandom(3 * READ_SIZE + 5)
    digest = blake3(content).hexdigest()
    blobs.place(stage(staging, "s", content), digest)
    loop = asyncio.get_running_loop()
    taken, release = ThreadPoolExecutor(1), threading.Event()
    loop.set_default_executor(taken)
    held = loop.run_in_executor(None, release.wait)
    try:
        chunks = await asyncio.wait_for(_read_all(blobs, digest, len(content)), timeout=10)
    finally:
        release.set()
        await held
    assert b"".join(chunks) == content


@pytest.mark.anyio
async def test_the_more_downloads_run_at_once_the_smaller_each_read(blobs, staging):
    """What downloads hold in reads not yet sent stays near READ_BUDGET (three reads each): one of
    eight at once reads a twenty-fourth of it at a time, one alone READ_SIZE, also after others were cut off."""
    content = os.urandom(4 * READ_SIZE)
    digest = blake3(content).hexdigest()
    blobs.place(stage(staging, "s", content), digest)
    streams = [blobs.read(digest, 0, len(content)) for _ in range(8)]
    firsts = [await anext(stream) for stream in streams]  # each has its next read under way
    rest = [chunk async for chunk in streams[0]]
    assert firsts[0] + b"".join(rest) == content
    assert max(len(chunk) for chunk in rest[1:]) <= READ_BUDGET // 24
    for stream in streams[1:]:
        await stream.aclose()
    assert [len(chunk) for chunk in await _read_all(blobs, digest, len(content))] == [READ_SIZE] * 4


async def _read_all(blobs: BlobStore, digest: str, length: int) -> list[bytes]:
    return [chunk async for chunk in blobs.read(digest, 0, length)]


def test_place_leaves_no_temporary_file_behind(blobs, staging):
    digest = blake3(b"y").hexdigest()
    blobs.place(stage(staging, "a", b"y"), digest)
    assert [path.name for path in blobs.path(digest).parent.iterdir()] == [digest]


def test_path_refuses_anything_but_a_digest(blobs):
    for bad in ["../../etc/passwd", "ab", "A" * 64, "0" * 63 + "/"]:
        with pytest.raises(ValueError):
            blobs.path(bad)


def test_blobs_skips_files_not_named_like_blobs(blobs, staging):
    digest = blake3(b"q").hexdigest()
    blobs.place(stage(staging, "a", b"q"), digest)
    (blobs.path(digest).parent / f".{digest}.junk.tmp").write_bytes(b"")
    assert [blob.digest for blob in blobs.list()] == [digest]


def test_hashes_agree_whether_streamed_or_read_from_file(tmp_path):
    content = os.urandom(5 * 1024 * 1024 + 7)
    path = tmp_path / "f"
    path.write_bytes(content)
    streamed = ContentHasher(sha256=True)
    for start in range(0, len(content), 65536):
        streamed.update(content[start : start + 65536])
    expected_blake3 = blake3(content).hexdigest()
    expected_sha256 = hashlib.sha256(content).hexdigest()
    assert streamed.digests().blake3 == expected_blake3
    assert streamed.digests().sha256 == expected_sha256
    assert hash_file(path).blake3 == expected_blake3
    assert hash_file(path).sha256 is None
    assert hash_file(path, sha256=True).sha256 == expected_sha256


def test_hash_of_an_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert hash_file(path).blake3 == blake3(b"").hexdigest()


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deep" / "er" / "entry.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [path.name for path in target.parent.iterdir()] == ["entry.json"]


def test_a_full_filesystem_raises_storage_full(staging, monkeypatch):
    file = staging.open("s", 0)

    def no_space(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    with pytest.raises(StorageFull):
        file.write_at(b"data", 0)
    file.close()


@pytest.mark.parametrize("bucket", ["../../..", "..", ".", "a/../../b", "/etc", ""])
def test_an_entry_path_never_leads_out_of_the_store(tmp_path, bucket):
    """Containment holds in the store itself, whatever its caller checked."""
    entries = EntryStore(tmp_path / "entries")
    with pytest.raises((OutsideRoot, ValueError)):
        entries.path(bucket, "k")
    with pytest.raises((OutsideRoot, ValueError)):
        entries.put(Entry(bucket=bucket, key="k", mime_type="a/b", bytes=0, created_at=0, digest="0" * 64))
    assert not any(tmp_path.glob("*.json")) and not any((tmp_path / "entries").rglob("*.json"))


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "..", "a/../../x"])
def test_a_staging_path_never_leads_out_of_the_area(staging, name):
    with pytest.raises(OutsideRoot):
        staging.open(name, 0)
    with pytest.raises(OutsideRoot):
        staging.remove(name)


def test_contained_resolves_dot_dot_before_comparing(tmp_path):
    root = tmp_path.resolve()
    assert contained(root, root / "a" / ".." / "b") == root / "b"
    with pytest.raises(OutsideRoot):
        contained(root, root / "a" / ".." / ".." / "b")


@pytest.mark.parametrize("refusal", [errno.EXDEV, errno.EOPNOTSUPP])
def test_concatenate_falls_back_to_sendfile_where_the_kernel_cannot_copy_ranges(staging, monkeypatch, refusal):
    contents = [os.urandom(100_000), os.urandom(3), os.urandom(70_001)]
    for number, content in enumerate(contents):
        stage(staging, f"p{number}", content)

    def refuse(*args: object) -> int:
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    staging.concatenate([(f"p{number}", len(content)) for number, content in enumerate(contents)], "final")
    assert staging.path("final").read_bytes() == b"".join(contents)


def test_concatenate_into_a_full_filesystem_raises_storage_full(staging, monkeypatch):
    stage(staging, "p", b"abc")

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", full)
    with pytest.raises(StorageFull):
        staging.concatenate([("p", 3)], "final")
