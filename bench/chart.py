"""benchmarks.png: the figures of benchmarks.md as bars, one panel per row, min–max as error bars.

Run by bench/run.py with a Python that has matplotlib (the running one, or bench/.peers/venv):
`python bench/chart.py RESULTS.json OUT.png`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Row

COLUMNS = 2


def draw(outcome: dict, path: Path) -> None:
    rows = sorted((Row.from_json(row) for row in outcome["rows"]), key=lambda row: row.workload)
    systems = [system["name"] for system in outcome["systems"]]
    colours = {name: plt.get_cmap("tab10")(index) for index, name in enumerate(systems)}
    lines = max(1, math.ceil(len(rows) / COLUMNS))
    figure, axes = plt.subplots(lines, COLUMNS, figsize=(13, 2.6 * lines), squeeze=False)
    for axis, row in zip(axes.flat, rows, strict=False):
        names = [name for name in systems if row.summary(name) is not None]
        summaries = [row.summary(name) for name in names]
        values = [summary[0] for summary in summaries]
        errors = [
            [value - low for value, (_, low, _) in zip(values, summaries, strict=True)],
            [high - value for value, (_, _, high) in zip(values, summaries, strict=True)],
        ]
        positions = range(len(names))
        axis.barh(positions, values, xerr=errors, color=[colours[name] for name in names], capsize=3)
        axis.set_yticks(list(positions), names, fontsize=8)
        axis.invert_yaxis()
        statistic = "" if row.statistic == "median" else f", {row.statistic}"
        better = "higher is better" if row.higher_is_better else "lower is better"
        axis.set_title(f"{row.workload}. {row.title}{statistic}\n{row.unit}, {better}", fontsize=9)
        axis.tick_params(axis="x", labelsize=8)
        for position, value, (_, _, high) in zip(positions, values, summaries, strict=True):
            axis.text(high, position, f" {value:,.0f}" if value >= 10 else f" {value:.2f}", va="center", fontsize=7)
        axis.margins(x=0.18)
    for axis in list(axes.flat)[len(rows) :]:
        axis.axis("off")
    facts = outcome["machine"]
    figure.suptitle(
        f"files service benchmark ({outcome['mode']} run): {facts['cores']} cores, Python {facts['python']}, "
        f"Node.js {facts['node']}; median of the runs, bars from min to max",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.98))  # room for the title above the panels
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]))
