"""One row of the report: a workload's samples per system, and how to summarise and compare them."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    workload: str  # the number: "1" ... "6"
    title: str
    unit: str
    higher_is_better: bool
    samples: dict[str, list[float]] = field(default_factory=dict)
    statistic: str = "median"  # or "p99": the figure a row reports, with the samples' min and max
    note: str = ""

    def add(self, system: str, value: float) -> None:
        self.samples.setdefault(system, []).append(value)

    def summary(self, system: str) -> tuple[float, float, float] | None:
        """(figure, min, max) of a system's samples; None when it did not run."""
        values = self.samples.get(system)
        if not values:
            return None
        return _figure(values, self.statistic), min(values), max(values)

    def ratio(self, system: str, other: str) -> float | None:
        """`system`'s figure divided by `other`'s."""
        mine, theirs = self.summary(system), self.summary(other)
        if mine is None or theirs is None or theirs[0] == 0:
            return None
        return mine[0] / theirs[0]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Row:
        return cls(**data)


def _figure(values: list[float], statistic: str) -> float:
    if statistic == "median":
        return statistics.median(values)
    if statistic == "p99":
        ordered = sorted(values)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]  # nearest rank
    raise ValueError(f"unknown statistic {statistic!r}")
