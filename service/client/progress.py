"""A progress bar on stderr for uploads and downloads: bytes done of total, rate, time left."""

from __future__ import annotations

import sys
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any, Self, TextIO

from tqdm import tqdm

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
LINE = "{desc} [{bar:24}] {percentage:3.0f}% {done} / {size}  {speed}/s  {left}"
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
    """How far a transfer has got, drawn on `stream` by tqdm at most once per interval and once at the end.

    `update` takes the absolute position, so a transfer that resumes or goes back after a
    retry shows where it really is; the rate counts only the bytes this process moved.
    """

    def __init__(self, label: str, total: int, position: int = 0, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        tty = stream.isatty()
        self.bar = Bar(
            tty,
            desc=label,
            total=total,
            initial=position,
            file=stream,
            mininterval=TTY_INTERVAL if tty else LINE_INTERVAL,
            bar_format=LINE,
            ascii=".#",
            leave=tty,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Show where the transfer stopped, also when it failed, and end the line."""
        self.bar.close()

    def advance(self, count: int) -> None:
        self.bar.moved += count
        self.bar.update(count)

    def update(self, position: int) -> None:
        self.bar.update(position - self.bar.n)


class Bar(tqdm):
    """tqdm with our units (KiB, MiB) and rate, and whole lines where redrawing in place is not possible."""

    def __init__(self, tty: bool, **options: Any) -> None:
        self.tty = tty
        self.moved = 0
        super().__init__(**options)

    @property
    def format_dict(self) -> MutableMapping[str, Any]:
        values = super().format_dict
        rate = self.moved / values["elapsed"] if values["elapsed"] > 0 else 0.0
        left = values["total"] - values["n"]
        if left <= 0:
            values["left"] = "done"
        elif rate > 0:
            values["left"] = f"{timedelta(seconds=round(left / rate))} left"
        else:
            values["left"] = "--:--:-- left"
        values.update(done=human(values["n"]), size=human(values["total"]), speed=human(rate))
        return values

    # tqdm's stubs say display returns None, but tqdm.close reads its result: False for "nothing cleared".
    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:  # type: ignore[override]
        if self.tty:
            return super().display(msg, pos)
        if msg is not None:  # tqdm clearing the line (msg ''): a log has nothing to clear
            return False
        self.fp.write(f"{self}\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        """Where the transfer stopped; on a terminal tqdm's own last draw, in a log one more whole line."""
        if not self.tty and not self.disable:
            self.display()
        super().close()
