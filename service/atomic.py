"""Replacing a small file whole: a process killed at any moment leaves the old or the new version."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from blobstore import fsync_dir


def replace_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `text` to a temporary file beside `path` (with `mode` from the start), flush it, rename it over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(descriptor, "w") as file:
            os.fchmod(file.fileno(), mode)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_dir(path.parent)
