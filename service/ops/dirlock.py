"""Who may use a data directory at once: an advisory lock (`flock`) on `<data dir>/service.lock`.

The partial file of an upload belongs to a session that only the session's Redis knows. A service
on the embedded Redis stand-in keeps its sessions inside its own process, where no other process
can see them: a second service, or fsck, would take its partial files for strays. So every service
process holds the lock for its whole life, EXCLUSIVE on the embedded stand-in (it must be alone)
and SHARED on a shared Redis (any number of workers, which all see the same sessions). fsck takes
it for its whole run, without waiting, to learn whether a service whose sessions it cannot see may
be writing (service/ops/fsck.py). The lock goes with the process: a killed process holds nothing.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from service.config import ConfigError

LOCK_FILE = "service.lock"


class DataDirBusy(ConfigError):
    """Another process holds the data directory in a way this service cannot share."""


class DataDirLock:
    """A held lock on a data directory; released by `release()` or when the process ends."""

    def __init__(self, fd: int, exclusive: bool) -> None:
        self._fd = fd
        self.exclusive = exclusive

    @classmethod
    def try_acquire(cls, data_dir: Path, exclusive: bool) -> DataDirLock | None:
        """The lock, or None at once when another process holds it in a conflicting way."""
        os.makedirs(data_dir, exist_ok=True)
        # Read-only is enough for flock, so a report-only fsck works on a directory it may not write.
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(fd, exclusive)

    def release(self) -> None:
        """Let go of the lock; releasing it again does nothing."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def hold_for_service(data_dir: Path, embedded: bool) -> DataDirLock:
    """The lock a service process holds for its life; DataDirBusy, with what to do, if it cannot have it."""
    lock = DataDirLock.try_acquire(data_dir, exclusive=embedded)
    if lock is not None:
        return lock
    where = data_dir.resolve()
    if embedded:
        raise DataDirBusy(
            f"another process (a service or fsck) is using the data directory {where}; a service on the "
            "embedded Redis stand-in must be alone on it, since no other process can see its upload "
            "sessions: stop the other one, or give every service the same FILES_REDIS_URL"
        )
    raise DataDirBusy(
        f"a service on the embedded Redis stand-in, or fsck, holds the data directory {where}: stop that "
        "service (or give it this FILES_REDIS_URL too), or start again when fsck has finished"
    )
