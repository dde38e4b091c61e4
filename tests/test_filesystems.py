"""Which filesystems the staging area writes past the page cache: local disks only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from service.storage.filesystems import filesystem_type
from service.storage.staging import StagingArea

MOUNTS = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 27 0:40 / /srv/files rw,relatime shared:5 - nfs4 fileserver:/export rw,vers=4.2
32 31 0:41 / /srv/files/cache rw,relatime - tmpfs tmpfs rw
33 27 254:16 / /mnt/my\\040disk rw - xfs /dev/vdb rw
34 27 0:50 / /srv/files rw - overlay overlay rw
"""


def test_the_deepest_mount_holding_a_path_names_its_filesystem() -> None:
    assert filesystem_type(Path("/home/user/data"), MOUNTS) == "ext4"
    assert filesystem_type(Path("/srv/files/partial"), MOUNTS) == "overlay"  # mounted last over the nfs4
    assert filesystem_type(Path("/srv/files/cache/x"), MOUNTS) == "tmpfs"
    assert filesystem_type(Path("/srv/filesystem"), MOUNTS) == "ext4"  # a name that only starts alike
    assert filesystem_type(Path("/mnt/my disk/partial"), MOUNTS) == "xfs"
    assert filesystem_type(Path("/"), MOUNTS) == "ext4"
    assert filesystem_type(Path("/x"), "") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the mount table is Linux's")
def test_a_staging_area_writes_past_the_cache_on_a_local_disk_only(tmp_path: Path) -> None:
    on_disk = StagingArea(tmp_path / "partial")
    assert on_disk.direct == (filesystem_type(tmp_path.resolve()) in ("ext4", "ext3", "xfs", "btrfs", "f2fs"))
    if Path("/dev/shm").is_dir() and filesystem_type(Path("/dev/shm")) == "tmpfs":
        in_memory = StagingArea(Path("/dev/shm") / f"files-test-{tmp_path.name}")
        try:
            assert not in_memory.direct
        finally:
            in_memory.root.rmdir()
