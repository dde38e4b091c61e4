"""What a transfer tells as it goes, for a front to show or ignore: small records handed to one callback.

The transfer logic never prints; the CLI turns these into lines and a progress bar on stderr
(`service.client.console`), a notebook may draw its own bar or keep a log, a script may pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Retrying:
    """A request failed in a way that may pass (network, busy, restarting); it is tried again after `delay`."""

    error: Exception
    delay: float


@dataclass(frozen=True)
class Hashing:
    """The file is read once for its BLAKE3 digest: the server checks the upload against it, and needs no byte
    of content it holds already."""

    path: str
    size: int


@dataclass(frozen=True)
class Deduplicated:
    """The service holds this content already, where the token may read it: the upload completed with no byte sent."""

    label: str
    size: int


@dataclass(frozen=True)
class UploadResumed:
    """A remembered session of this upload is still on the server: sending goes on from `offset`."""

    session_id: str
    offset: int


@dataclass(frozen=True)
class SourceChanged:
    """The local file changed (size or mtime) since its remembered session began: that one is cancelled."""

    path: str
    session_id: str


@dataclass(frozen=True)
class SessionGone:
    """The server no longer knows the session; a new one starts. `midway`: it vanished during the upload."""

    session_id: str
    midway: bool


@dataclass(frozen=True)
class DownloadResumed:
    """A partial download was left at `part`; the rest is fetched from `offset` with a Range request."""

    part: Path
    offset: int


@dataclass(frozen=True)
class TransferStarted:
    """Bytes start to move: `total` in all, `position` of them there already (a resumed transfer)."""

    label: str
    total: int
    position: int


@dataclass(frozen=True)
class TransferMoved:
    """`count` more bytes went over the network (what a rate counts)."""

    count: int


@dataclass(frozen=True)
class TransferRepositioned:
    """After a failure the transfer goes on from `position`: the server's offset, or 0 for a download afresh."""

    position: int


@dataclass(frozen=True)
class TransferEnded:
    """No more bytes move, whether the transfer finished or failed."""


# What happened, worth a line of its own; and how far bytes have moved, worth a progress bar.
Notice = Retrying | Hashing | Deduplicated | UploadResumed | SourceChanged | SessionGone | DownloadResumed
TransferProgress = TransferStarted | TransferMoved | TransferRepositioned | TransferEnded
Event = Notice | TransferProgress
EventHandler = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The handler for callers that want no news."""
