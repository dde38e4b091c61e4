"""A progress bar on stderr for uploads and downloads: bytes done of total, rate, time left."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Self, TextIO

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
BAR_WIDTH = 24
# On a terminal the line is redrawn in place, often enough to look live but not so often that
# drawing costs more than the transfer; in a log every redraw is a new line, so fewer of them.
TTY_INTERVAL = 0.1
LINE_INTERVAL = 2.0


def human(count: float) -> str:
    """A byte count for people: 1023 B, 1.5 MiB, ..."""
    for unit in UNITS[:-1]:
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} {UNITS[-1]}"


class Progress:
    """How far a transfer has got, drawn on `stream` at most once per interval and once at the end.

    `update` takes the absolute position, so a transfer that resumes or goes back after a
    retry shows where it really is; the rate counts only the bytes this process moved.
    """

    def __init__(self, label: str, total: int, position: int = 0, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.position = position
        self.moved = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = TTY_INTERVAL if self.tty else LINE_INTERVAL
        self.started = time.monotonic()
        self.drawn_at = float("-inf")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Show where the transfer stopped, also when it failed, and end the line."""
        self.draw()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def advance(self, count: int) -> None:
        self.moved += count
        self.update(self.position + count)

    def update(self, position: int) -> None:
        self.position = position
        if time.monotonic() - self.drawn_at >= self.interval:
            self.draw()

    def draw(self) -> None:
        now = time.monotonic()
        self.drawn_at = now
        elapsed = now - self.started
        rate = self.moved / elapsed if elapsed > 0 else 0.0
        fraction = self.position / self.total if self.total else 1.0
        if self.position >= self.total:
            left = "done"
        elif rate > 0:
            left = f"{timedelta(seconds=round((self.total - self.position) / rate))} left"
        else:
            left = "--:--:-- left"
        filled = round(fraction * BAR_WIDTH)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%} "
            f"{human(self.position)} / {human(self.total)}  {human(rate)}/s  {left}"
        )
        # "\r" + clearing to the end of the line redraws in place on a terminal.
        self.stream.write(f"\r{line}\x1b[K" if self.tty else f"{line}\n")
        self.stream.flush()
