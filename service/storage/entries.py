"""Bucket/key entries, durable on the data volume: the source of truth for what files exist.

One small JSON file per entry at `<root>/<bucket>/<h[0:2]>/<h>.json`, where h is the
SHA-256 of the key: keys may nest (`a` and `a/b` both exist) and may be longer than
a file name may be, so the key itself is not a path.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from service.core.model import Entry
from service.storage.durable import contained, make_dirs, remove_durably, write_atomic

READ_SIZE = 64 * 1024


class EntryStore:
    """The entry store port on a filesystem."""

    def __init__(self, root: Path) -> None:
        make_dirs(root)
        self.root = root.resolve()

    def path(self, bucket: str, key: str) -> Path:
        """Where the entry of `bucket`/`key` lives; ValueError when `bucket` is not one plain directory
        name, OutsideRoot when the path would lead out of the store (whatever the caller checked)."""
        if not _one_component(bucket):
            raise ValueError(f"not a bucket name: {bucket!r}")
        hashed = hashlib.sha256(key.encode()).hexdigest()
        return contained(self.root, self.root / bucket / hashed[:2] / f"{hashed}.json")

    def where(self, bucket: str, key: str) -> str:
        return str(self.path(bucket, key))

    def audit(self) -> tuple[list[Entry], list[tuple[str, str]]]:
        found, damaged = [], []
        for directory, _, files in os.walk(self.root):
            for name in files:
                path = Path(directory, name)
                if name.startswith(".") or not name.endswith(".json"):
                    continue
                try:
                    entry = Entry.model_validate_json(path.read_bytes())
                except (OSError, ValidationError) as error:
                    damaged.append((str(path), str(error).splitlines()[0]))
                    continue
                if self.path(entry.bucket, entry.key) != path:
                    damaged.append((str(path), f"holds {entry.bucket}/{entry.key}, which belongs elsewhere"))
                    continue
                found.append(entry)
        return found, damaged

    def get(self, bucket: str, key: str) -> Entry | None:
        return _read(self.path(bucket, key), bucket, key)

    def put(self, entry: Entry) -> Entry | None:
        """Write the entry, replacing any of the same bucket and key; returns the one it replaced."""
        path = self.path(entry.bucket, entry.key)
        replaced = _read(path, entry.bucket, entry.key)
        write_atomic(path, entry.model_dump_json().encode())
        return replaced

    def delete(self, bucket: str, key: str) -> bool:
        return remove_durably(self.path(bucket, key))

    def exists(self, entry: Entry) -> bool:
        return self.get(entry.bucket, entry.key) == entry

    def scan(self, changed_since: float | None = None) -> Iterator[Entry]:
        """Every entry on the volume (or only those written at or after `changed_since`, by the
        file's mtime), in no particular order; unreadable files are skipped.

        Symbolic links are not followed: a root that became one raises OutsideRoot, a linked
        entry file is skipped (os.walk already leaves linked directories alone).
        """
        contained(self.root, self.root / "entry")
        for directory, _, files in os.walk(self.root):
            for name in files:
                if not name.endswith(".json") or name.startswith("."):
                    continue
                path = os.path.join(directory, name)
                try:
                    if changed_since is not None and os.lstat(path).st_mtime < changed_since:
                        continue
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    continue
                except OSError as error:
                    if error.errno == errno.ELOOP:
                        continue
                    raise
                try:
                    entry = Entry.model_validate_json(_read_all(fd))
                except ValidationError:
                    continue
                yield entry


def _one_component(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _read(path: Path, bucket: str, key: str) -> Entry | None:
    """The entry in the file at `path`, if it is the one of this bucket and key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError):
        return None
    entry = Entry.model_validate_json(_read_all(fd))
    return entry if (entry.bucket, entry.key) == (bucket, key) else None


def _read_all(fd: int) -> bytes:
    """Read the file open at `fd` to its end and close it (plain reads: no buffered file object to set up)."""
    try:
        parts = []
        while part := os.read(fd, READ_SIZE):
            parts.append(part)
    finally:
        os.close(fd)
    return b"".join(parts)
