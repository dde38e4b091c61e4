"""A full data volume: a real `files-service serve` on a small tmpfs that runs out of space.

The upload that hits the full disk gets 507 with a JSON detail and keeps its session at an
offset that matches the bytes held; nothing half-written is left in the blob store or the
entries; the files already stored stay whole; once space is freed the same session resumes
from the reported offset and completes with the exact content. Twice: space running out
while the content streams in, and at commit time, when only the entry is left to write.

Needs root (mount -t tmpfs); skipped otherwise. The mount is always removed at teardown.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    STOP_SECONDS,
    Launcher,
    MiB,
    ServiceProcess,
    assert_content,
    b3,
    expect,
    files_under,
    pieces,
    wait_for,
)

VOLUME = "24m"
PAGE = 4096
FIRST = ("kept", "first/small.bin")


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def _unmount(path: Path) -> None:
    """Unmount, waiting out a busy volume for a while; detach it lazily as a last resort."""

    def unmounted() -> bool:
        subprocess.run(["umount", str(path)], capture_output=True, check=False)
        return not _mounted(path)

    try:
        wait_for(unmounted, STOP_SECONDS * 2, f"{path} to unmount")
    except AssertionError:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
    assert not _mounted(path), f"could not unmount {path}"


@pytest.fixture
def data_dir(tmp_path: Path, launcher: Launcher) -> Iterator[Path]:
    """The service's FILES_DATA_DIR on a tmpfs of VOLUME bytes (overrides the harness's plain directory).

    It asks for `launcher` so that it is torn down first: it stops every process (whose open files
    would keep the volume busy) and then unmounts, whatever the test did.
    """
    if os.geteuid() != 0:
        pytest.skip("the full-disk tests mount a tmpfs, which needs root")
    directory = tmp_path / "data"
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={VOLUME},mode=0755", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no mount permission?): {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield directory
    finally:
        try:
            launcher.stop_all()
        finally:
            _unmount(directory)


def streamed(parts: list[bytes]) -> Iterator[bytes]:
    """A body without Content-Length: httpx sends a generator with chunked transfer encoding."""
    yield from parts


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(data_dir: Path, leave: int) -> Path:
    """A filler file on the volume that leaves exactly `leave` bytes (whole pages) free."""
    assert leave % PAGE == 0
    filler = data_dir / "filler.bin"
    size = free_bytes(data_dir) - leave
    assert size > 0, f"the volume has only {free_bytes(data_dir)} bytes free"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    assert free_bytes(data_dir) == leave, (free_bytes(data_dir), leave)
    return filler


def store_state(data_dir: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(blobs, entries, temporary files) on the volume."""
    blobs = files_under(data_dir / "blobs")
    entries = files_under(data_dir / "entries")
    temporary = [path for path in files_under(data_dir) if path.name.startswith(".") or path.suffix == ".tmp"]
    return blobs, entries, temporary


class Volume:
    """The service on the tmpfs, with its first file stored."""

    def __init__(self, process: ServiceProcess, data_dir: Path) -> None:
        self.process = process
        self.api = process.api
        self.data_dir = data_dir
        self.first = os.urandom(64 * 1024 + 5)
        self.api.upload(*FIRST, self.first)
        self.blobs, self.entries, temporary = store_state(data_dir)
        assert [blob.name for blob in self.blobs] == [b3(self.first)] and len(self.entries) == 1 and not temporary

    def assert_first_intact(self) -> None:
        assert_content(self.api.content(*FIRST), self.first)

    def assert_nothing_half_written(self, bucket: str, key: str) -> None:
        """Only the first file's blob and entry, no temporary file, and no entry for the new key."""
        blobs, entries, temporary = store_state(self.data_dir)
        assert blobs == self.blobs, f"the blob store holds more than the first file's blob: {blobs}"
        assert entries == self.entries, f"an entry was written for the refused upload: {entries}"
        assert temporary == [], f"temporary files were left behind: {temporary}"
        expect(self.api.info(bucket, key), 404)
        expect(self.api.content(bucket, key), 404)
        assert key not in self.api.keys(bucket)

    def reported_offset(self, session_id: str) -> int:
        """The session's offset, checked against the bytes its partial file holds."""
        offset = self.api.offset(session_id)
        partial = self.data_dir / "partial" / session_id
        held = partial.stat().st_size if partial.exists() else 0
        assert held == offset, f"the session reports offset {offset} but its partial file holds {held} bytes"
        return offset


@pytest.fixture
def volume(services, data_dir: Path) -> Volume:
    # A long lease: the request that fills the disk must not lose its session to a short one meanwhile.
    return Volume(services.start(FILES_LOCK_LEASE_SECONDS="30"), data_dir)


def assert_insufficient_storage(response, offset: int | None = None) -> dict:
    expect(response, 507)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "full" in body["detail"] and body["code"] == "insufficient_storage", body
    assert isinstance(body["offset"], int) and response.headers["upload-offset"] == str(body["offset"])
    if offset is not None:
        assert body["offset"] == offset, body
    return body


@pytest.mark.parametrize("how", ["after a first chunk", "in one request", "in one chunked request"])
def test_upload_that_fills_the_disk_midway_gets_507_and_resumes(volume: Volume, data_dir: Path, how: str) -> None:
    content = os.urandom(8 * MiB + 123)
    bucket, key = "big", "runs/out/of/space.bin"
    session_id = volume.api.create(bucket, key, len(content))["id"]
    start = 0
    if how == "after a first chunk":
        assert volume.api.chunk(session_id, content[:MiB], offset=0)["offset"] == MiB
        start = MiB
    filler = fill(data_dir, leave=2 * MiB)  # the rest runs out of space about 2 MiB in

    body = content[start:] if how != "in one chunked request" else streamed(pieces(content, 256 * 1024))
    refused = volume.api.send(session_id, body, offset=start)
    reported = assert_insufficient_storage(refused)["offset"]
    volume.assert_nothing_half_written(bucket, key)
    volume.assert_first_intact()
    offset = volume.reported_offset(session_id)
    assert offset == reported and start <= offset < len(content)
    # While the disk is still full, the same request fails the same way, and loses nothing.
    assert_insufficient_storage(volume.api.send(session_id, content[offset:], offset=offset), offset)
    assert volume.reported_offset(session_id) == offset

    filler.unlink()
    result = volume.api.chunk(session_id, content[offset:], offset=offset)
    assert (result["bytes"], result["digest"]) == (len(content), f"blake3:{b3(content)}")
    assert_content(volume.api.content(bucket, key), content)
    volume.assert_first_intact()
    blobs, entries, temporary = store_state(data_dir)
    assert sorted(blob.name for blob in blobs) == sorted([b3(volume.first), b3(content)]) and len(entries) == 2
    assert temporary == []
    wait_for(lambda: files_under(data_dir / "partial") == [], 10, "the completed upload's partial file to go")


def test_disk_full_at_commit_gets_507_and_resumes(volume: Volume, data_dir: Path) -> None:
    """The content fits to the last page; only the entry (a new file) finds no room."""
    content = os.urandom(MiB)
    bucket, key = "commit", "no/room/for/the/entry.bin"
    session_id = volume.api.create(bucket, key, len(content))["id"]
    filler = fill(data_dir, leave=len(content))  # exactly the content's pages: nothing for the entry file

    refused = volume.api.send(session_id, content, offset=0)
    assert_insufficient_storage(refused, offset=len(content))
    volume.assert_nothing_half_written(bucket, key)
    volume.assert_first_intact()
    assert volume.reported_offset(session_id) == len(content)

    filler.unlink()
    # Resuming from the reported offset (the size: no bytes left to send) commits the file.
    result = volume.api.chunk(session_id, b"", offset=len(content))
    assert (result["bytes"], result["digest"]) == (len(content), f"blake3:{b3(content)}")
    assert_content(volume.api.content(bucket, key), content)
    volume.assert_first_intact()
    assert store_state(data_dir)[2] == []


def test_the_tmpfs_is_gone_after_a_test(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing this module mounted is still mounted (the fixtures of the tests above have run their teardown)."""
    with open("/proc/self/mounts") as mounts:
        leftover = [line for line in mounts if str(tmp_path_factory.getbasetemp()) in line]
    assert leftover == [], leftover
