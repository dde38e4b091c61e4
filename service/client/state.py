"""The client's memory of uploads in progress, so a rerun of a killed upload resumes its session.

One small JSON file (FILES_CLIENT_STATE, else $XDG_STATE_HOME or ~/.local/state, then
files-service/sessions.json), replaced atomically on each change so that a client killed at
any moment leaves either the old or the new version, never a torn one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from service.client import ClientError
from service.storage.durable import write_atomic


def default_path() -> Path:
    if override := os.environ.get("FILES_CLIENT_STATE"):
        return Path(override)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "files-service" / "sessions.json"


@dataclass(frozen=True)
class Source:
    """What is uploaded where: the server, the target and the local file as it was when the upload began.

    A rerun with all of these equal is the same upload; a changed file (size or mtime) is not.
    """

    server: str
    bucket: str
    key: str
    path: str
    size: int
    mtime_ns: int

    @property
    def slot(self) -> tuple[str, str, str, str]:
        """Where an upload goes and from which local path: one remembered upload per slot."""
        return self.server, self.bucket, self.key, self.path


@dataclass(frozen=True)
class Upload:
    """An upload session this client started for a source, and what it declared to the server."""

    source: Source
    session_id: str
    digest: str
    mime_type: str


class SessionState:
    """The uploads in progress, read from and written back to one JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def uploads(self) -> list[Upload]:
        try:
            records = json.loads(self.path.read_text())["uploads"]
            return [Upload(**{**record, "source": Source(**record["source"])}) for record in records]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as error:
            raise ClientError(f"{self.path} is not a valid client state file ({error!r}); remove it") from None

    def find(self, source: Source) -> Upload | None:
        """The upload remembered for the source's slot, whether or not the file has changed since."""
        return next((upload for upload in self.uploads() if upload.source.slot == source.slot), None)

    def remember(self, upload: Upload) -> None:
        self._write([*self._others(upload.source), upload])

    def forget(self, upload: Upload) -> None:
        self._write(self._others(upload.source))

    def _others(self, source: Source) -> list[Upload]:
        return [upload for upload in self.uploads() if upload.source.slot != source.slot]

    def _write(self, uploads: list[Upload]) -> None:
        write_atomic(
            self.path, json.dumps({"uploads": [asdict(upload) for upload in uploads]}, indent=2).encode(), 0o600
        )
