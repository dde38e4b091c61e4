"""Which filesystem a directory is on: writes past the page cache only pay off on a local disk.

On a local block filesystem an `O_DIRECT` write hands the disk the buffer as it is. On a network
filesystem (NFS, CephFS, SMB, as a volume shared by several machines usually is) each such write
is a synchronous round trip to the server, committed there, where the page cache would have
gathered the writes and sent them behind the upload's back; and tmpfs or overlayfs refuse it or
gain nothing. So only the filesystems below are written past the cache.
"""

from __future__ import annotations

from pathlib import Path

DIRECT_WRITES = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
MOUNTINFO = Path("/proc/self/mountinfo")


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem mounted where `path` (resolved) lies, from the mount table (Linux's
    /proc/self/mountinfo, or `mountinfo` given as its text); None where there is no such table."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    target, found, deepest = str(path), None, -1
    for line in mountinfo.splitlines():
        fields, _, after = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not after:
            continue
        point = _unescaped(parts[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= deepest:  # the last mount on the deepest point covers the others
            found, deepest = after.split()[0], len(point)
    return found


def takes_direct_writes(path: Path) -> bool:
    return filesystem_type(path.resolve()) in DIRECT_WRITES


def _unescaped(field: str) -> str:
    """The mount table writes a space, a tab, a newline and a backslash in octal (`\\040`...)."""
    for code, character in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, character)
    return field
