"""How the CLI shows what a transfer tells: a line on stderr for each notice, and a progress bar while bytes move."""

from __future__ import annotations

import sys

from service.client.events import (
    Deduplicated,
    DownloadResumed,
    Event,
    Hashing,
    Notice,
    Retrying,
    SessionGone,
    SourceChanged,
    TransferEnded,
    TransferMoved,
    TransferRepositioned,
    TransferStarted,
    UploadResumed,
)
from service.client.progress import Progress, human


def describe(error: Exception) -> str:
    return str(error) or type(error).__name__


class Console:
    """An event handler for `upload_file`, `download_file` and `Retries` that writes to stderr.

    The transfer functions send the progress events of one transfer between its start and its end.
    """

    def __init__(self) -> None:
        self.progress: Progress | None = None

    def __call__(self, event: Event) -> None:
        match event:
            case TransferStarted(label, total, position):
                self.progress = Progress(label, total, position)
            case TransferMoved(count):
                self.bar().advance(count)
            case TransferRepositioned(position):
                self.bar().update(position)
            case TransferEnded():
                self.bar().close()
                self.progress = None
            case _:
                print(line(event), file=sys.stderr)

    def bar(self) -> Progress:
        if self.progress is None:
            raise RuntimeError("a transfer's progress came before its start")
        return self.progress


def line(notice: Notice) -> str:
    """What the CLI says when something happens on the way."""
    match notice:
        case Retrying(error, delay):
            return f"files-service: {describe(error)}; retrying in {delay:.3g} s"
        case Hashing(path, size):
            return f"computing the BLAKE3 digest of {path} ({human(size)})"
        case Deduplicated(label, size):
            return f"{label}: the service holds this content already; nothing to send ({human(size)} skipped)"
        case UploadResumed(session_id, offset):
            return f"resuming upload session {session_id} at byte {offset}"
        case SourceChanged(path, session_id):
            return f"{path} has changed since upload session {session_id} began; starting anew"
        case SessionGone(session_id, midway):
            why = " (did the service restart?)" if midway else ""
            return f"upload session {session_id} is gone{why}; starting a new one"
        case DownloadResumed(part, offset):
            return f"resuming {part} at byte {offset}"
