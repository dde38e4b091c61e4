"""The blob store alone: bytes and hashes on a filesystem, no HTTP and no Redis."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from blake3 import blake3

from service.core.digests import ContentHasher, hash_file
from service.storage.blobs import BlobStore
from service.storage.durable import OutsideRoot, StorageFull, contained, write_atomic
from service.storage.entries import Entry, EntryStore
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
    assert [name for name, _ in blobs.blobs()] == [digest]


def test_placing_equal_content_again_keeps_one_copy(blobs, staging):
    content = os.urandom(10_000)
    digest = blake3(content).hexdigest()
    assert blobs.place(stage(staging, "a", content), digest) is True
    assert blobs.place(stage(staging, "b", content), digest) is False
    assert len(list(blobs.blobs())) == 1
    assert blobs.path(digest).stat().st_ino != staging.path("b").stat().st_ino


def test_reusing_a_blob_refreshes_its_mtime(blobs, staging):
    digest = blake3(b"x").hexdigest()
    blobs.place(stage(staging, "a", b"x"), digest)
    os.utime(blobs.path(digest), (1, 1))
    blobs.place(stage(staging, "b", b"x"), digest)
    assert blobs.path(digest).stat().st_mtime > 1


def test_a_damaged_blob_of_the_wrong_size_is_replaced(blobs, staging):
    content = b"the real content"
    digest = blake3(content).hexdigest()
    blobs.place(stage(staging, "a", content), digest)
    blobs.path(digest).unlink()
    blobs.path(digest).write_bytes(b"trunc")
    assert blobs.place(stage(staging, "b", content), digest) is True
    assert blobs.path(digest).read_bytes() == content


def test_place_leaves_no_temporary_file_behind(blobs, staging):
    digest = blake3(b"y").hexdigest()
    blobs.place(stage(staging, "a", b"y"), digest)
    assert [path.name for path in blobs.path(digest).parent.iterdir()] == [digest]


def test_delete_and_size(blobs, staging):
    digest = blake3(b"zz").hexdigest()
    blobs.place(stage(staging, "a", b"zz"), digest)
    assert blobs.size(digest) == 2
    assert blobs.delete(digest) is True
    assert blobs.size(digest) is None
    assert blobs.delete(digest) is False


def test_path_refuses_anything_but_a_digest(blobs):
    for bad in ["../../etc/passwd", "ab", "A" * 64, "0" * 63 + "/"]:
        with pytest.raises(ValueError):
            blobs.path(bad)


def test_blobs_skips_files_not_named_like_blobs(blobs, staging):
    digest = blake3(b"q").hexdigest()
    blobs.place(stage(staging, "a", b"q"), digest)
    (blobs.path(digest).parent / f".{digest}.junk.tmp").write_bytes(b"")
    assert [name for name, _ in blobs.blobs()] == [digest]


def test_staging_open_cuts_off_bytes_past_the_offset(staging):
    stage(staging, "s", b"0123456789")
    file = staging.open("s", 4)
    file.write_at(b"ab", 4)
    file.close()
    assert staging.path("s").read_bytes() == b"0123ab"


def test_staging_truncate_and_remove(staging):
    file = staging.open("s", 0)
    file.write_at(b"abcdef", 0)
    file.truncate(2)
    file.write_at(b"Z", 2)
    file.close()
    assert staging.path("s").read_bytes() == b"abZ"
    assert staging.names() == ["s"]
    staging.remove("s")
    staging.remove("s")
    assert staging.names() == []


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
    import errno

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
