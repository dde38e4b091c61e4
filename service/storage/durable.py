"""Crash-safe file writes: temporary name, flush, rename, flush the directory."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from service.core.errors import OutsideRoot, StorageFull

T = TypeVar("T")


@contextlib.contextmanager
def space_checked() -> Iterator[None]:
    """Turn "no space left" (or over quota) into StorageFull; other errors pass through."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(str(error)) from error
        raise


def contained(root: Path, path: Path) -> Path:
    """`path` resolved under `root`, after checking that each directory between them is a real one.

    `root` must be resolved already. `..` and `.` are resolved first (a name such as
    `../../etc` would otherwise compare as text under `root` and lead out of it); with every
    directory checked to be no symbolic link, that lexical resolution is the real one. The
    last component is not followed by the callers (they open with O_NOFOLLOW or replace it),
    so only the directories are checked: one lstat each, cheaper than resolving the whole
    path every time. Raises OutsideRoot.
    """
    path = Path(os.path.normpath(path))
    if path == root or not path.is_relative_to(root):
        raise OutsideRoot(f"{path} is outside {root}")
    parts = path.parent.relative_to(root).parts
    for depth in range(len(parts) + 1):
        # `root` itself too: resolved at start, it may have been replaced by a link since.
        directory = root.joinpath(*parts[:depth])
        try:
            mode = os.lstat(directory).st_mode
        except FileNotFoundError:
            break  # the rest is made by make_dirs, as real directories
        if not stat.S_ISDIR(mode):
            raise OutsideRoot(f"{directory} is a symbolic link (or not a directory); refusing to use it")
    return path


_PROCESS = f"{os.getpid()}-{secrets.token_hex(4)}"
_COUNT = itertools.count()


TEMPORARY = re.compile(r"\..+\.\d+-[0-9a-f]{8}-\d+\.tmp")


def temporary_path(path: Path) -> Path:
    """A hidden name beside `path` that no other writer, in this process or another, will pick."""
    return path.with_name(f".{path.name}.{_PROCESS}-{next(_COUNT)}.tmp")


def stale_temporaries(root: Path, cutoff: float) -> Iterator[Path]:
    """The temporaries below `root` whose inode last changed before `cutoff` (a unix time):
    left by a writer that died between making one and renaming it.

    Age is the inode's ctime, not its mtime: a hard link made by os.link keeps the mtime of its
    source (a staging file's last write, possibly long ago) but updates the ctime, so a blob
    being placed this moment would look old by its mtime.
    """
    for directory, _, names in os.walk(root):
        for name in names:
            if not TEMPORARY.fullmatch(name):
                continue
            path = Path(directory, name)
            try:
                if os.lstat(path).st_ctime < cutoff:
                    yield path
            except FileNotFoundError:
                continue  # renamed or removed by its writer meanwhile


class VolumeTemporaries:
    """The temporaries port over the directories where the file stores write (see `stale_temporaries`)."""

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = roots

    def stale(self, cutoff: float) -> list[str]:
        return [str(path) for root in self.roots for path in stale_temporaries(root, cutoff)]

    def remove(self, name: str) -> None:
        path = Path(name)
        if not TEMPORARY.fullmatch(path.name) or not any(path.is_relative_to(root) for root in self.roots):
            raise OutsideRoot(f"{name} is no temporary of this volume")
        path.unlink(missing_ok=True)


def fsync_dir(path: Path) -> None:
    """Flush a directory so that a rename or unlink inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create `path` and any missing parents, flushing each parent that gained an entry."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue
        fsync_dir(directory.parent)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file whole.

    The file is made with `mode` from the start (less the umask), so a secret is never readable by others.
    """
    temporary = temporary_path(path)
    try:
        with space_checked():
            fd = in_made_dirs(lambda: os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), path.parent)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, path)
            fsync_dir(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def in_made_dirs(create: Callable[[], T], directory: Path) -> T:
    """Run `create`, which makes something in `directory`; when the directory is missing, make it and retry.

    Directories are there nearly always: trying first spares a stat of each on every write.
    """
    try:
        return create()
    except FileNotFoundError:
        make_dirs(directory)
        return create()


def remove_durably(path: Path) -> bool:
    """Unlink `path` and flush its directory; False when it was already gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


class VolumeProbe:
    """The store probe of a data volume: a file made and removed in its top directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def probe(self) -> None:
        with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".readyz-"):
            pass
