"""benchmarks.md: the table of the issue (each workload, each system, the service's ratio to each other).

Pure standard library, so that the table is written even where matplotlib cannot be had.
"""

from __future__ import annotations

from results import Row

SERVICE = "service"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def _cell(row: Row, system: str) -> str:
    summary = row.summary(system)
    if summary is None:
        return "–"
    figure, low, high = summary
    if len(row.samples[system]) == 1:
        return _number(figure)
    return f"{_number(figure)} ({_number(low)}–{_number(high)})"


def _label(row: Row) -> str:
    statistic = "" if row.statistic == "median" else f", {row.statistic}"
    arrow = "↑" if row.higher_is_better else "↓"
    return f"{row.title}{statistic}", f"{row.unit} {arrow}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(line) + " |" for line in lines),
    ]


def markdown(outcome: dict, chart: str | None) -> str:
    rows = sorted((Row.from_json(row) for row in outcome["rows"]), key=lambda row: row.workload)
    systems = [system["name"] for system in outcome["systems"]]
    others = [name for name in systems if name != SERVICE]
    facts = outcome["machine"]
    quick = outcome["mode"] == "quick"
    text = [
        "# Benchmarks",
        "",
        f"Written by `python bench/run.py{' --quick' if quick else ''}` on {outcome['finished']}, "
        f"in {outcome['seconds']:.0f} s."
        + (" **A quick smoke run: sizes are shrunk and the figures mean nothing.**" if quick else ""),
        "",
        (
            f"Machine: {facts['cores']} cores ({facts['processor'] or 'unknown processor'}), "
            f"{facts['memory']} of memory, "
            f"Linux {facts['kernel']}, Python {facts['python']}, Node.js {facts['node']}, {facts['glibc']}; "
            f"every system stored on {facts['disk']}. "
            f"Load average when it finished: {', '.join(str(load) for load in outcome['load_average'])}."
        ),
        "",
    ]
    if chart:
        text += [f"![The same figures as a chart]({chart})", ""]
    flushed_by = (
        "the benchmark runs os.sync() after each upload, inside the timing"
        if outcome.get("peer_flush") == "sync"
        else "the benchmark fsyncs the upload's files and folder after each upload, inside the timing"
    )
    text += ["## Systems", ""]
    text += _table(
        ["system", "flushes a completed upload before replying", "what runs"],
        [
            [
                system["name"],
                "yes" if system["flushes"] else f"no: {flushed_by}",
                system["notes"],
            ]
            for system in outcome["systems"]
        ],
    )
    for name, reason in outcome["skipped"].items():
        text += ["", f"Skipped: **{name}**: {reason}"]
    text += [
        "",
        "## Results",
        "",
        (
            "Each cell: the median over the runs, with the smallest and largest run in brackets "
            "(p99 rows: the 99th percentile of the requests, with their smallest and largest). "
            "↑ higher is better, ↓ lower is better."
        ),
        "",
    ]
    text += _table(
        ["#", "workload", "unit", *systems],
        [[row.workload, *_label(row), *(_cell(row, system) for system in systems)] for row in rows],
    )
    if others:
        text += [
            "",
            "## Ratios",
            "",
            (
                "The service's figure divided by each other system's, row by row: above 1 the service's figure is "
                "the larger (better on ↑ rows, worse on ↓ rows)."
            ),
            "",
        ]
        text += _table(
            ["#", "workload", "unit", *(f"service ÷ {name}" for name in others)],
            [[row.workload, *_label(row), *(_ratio(row.ratio(SERVICE, name)) for name in others)] for row in rows],
        )
    if not quick:
        text += ["", "## Targets", "", "The issue's targets, checked against this run's figures.", ""]
        text += _table(["target", "this run", "met?"], [_target_line(rows, target) for target in TARGETS])
    text += ["", "## How it was measured", ""]
    text += [f"- {note}" for note in [*METHOD, *outcome["notes"], *(row_note for row_note in _row_notes(rows))]]
    return "\n".join(text) + "\n"


# (what, workload, row title starts with, the system checked, compared with (a system) or None for an
# absolute bound, bound)
TUS = "service tus"
TARGETS = [
    ("one request at least 1.0 of the tuned ceiling", "1", "upload", SERVICE, "ceiling tuned", 1.0),
    ("one request 1.2 of the tuned ceiling (the moonshot)", "1", "upload", SERVICE, "ceiling tuned", 1.2),
    ("chunks at least 0.95 of the tuned ceiling", "2", "upload", SERVICE, "ceiling tuned", 0.95),
    ("whole download at least 1.0 of the tuned ceiling", "4", "download 1 GiB whole", SERVICE, "ceiling tuned", 1.0),
    ("ranged download at least 1.0 of the tuned ceiling", "4", "download 1 GiB as", SERVICE, "ceiling tuned", 1.0),
    ("one request ahead of tuspyserver (tuned)", "1", "upload", SERVICE, "tuspyserver tuned", 1.0),
    ("one request ahead of @tus/server", "1", "upload", SERVICE, "@tus/server", 1.0),
    ("chunks ahead of tuspyserver (tuned)", "2", "upload", SERVICE, "tuspyserver tuned", 1.0),
    ("chunks ahead of @tus/server", "2", "upload", SERVICE, "@tus/server", 1.0),
    ("small files: tuspyserver's rate is the floor", "3", "4 KiB", SERVICE, "tuspyserver", 1.0),
    ("small files: @tus/server's rate is the aim", "3", "4 KiB", SERVICE, "@tus/server", 1.0),
    ("tus, one request: ahead of tuspyserver (tuned)", "1", "upload", TUS, "tuspyserver tuned", 1.0),
    ("tus, one request: ahead of @tus/server", "1", "upload", TUS, "@tus/server", 1.0),
    ("tus, chunks: ahead of tuspyserver (tuned)", "2", "upload", TUS, "tuspyserver tuned", 1.0),
    ("tus, chunks: ahead of @tus/server", "2", "upload", TUS, "@tus/server", 1.0),
    ("tus, small files: at least @tus/server's rate", "3", "4 KiB", TUS, "@tus/server", 1.0),
    ("tus, parallel parts: ahead of tuspyserver", "7", "upload", TUS, "tuspyserver", 1.0),
    ("scale-out: two workers at least 1.5 times one", "8", "scale-out", "service, 2 workers", SERVICE, 1.5),
    ("scale-out: two processes at least 1.5 times one", "8", "scale-out", "service, 2 processes", SERVICE, 1.5),
    ("a page of 1000 under 50 ms at the median", "5", "list a page", SERVICE, None, 50.0),
    ("rebuild of 100,000 entries under 30 s", "5", "rebuild", SERVICE, None, 30.0),
    ("peak RSS under 100 MiB during 1", "6", "peak RSS during 1", SERVICE, None, 100.0),
    ("peak RSS under 100 MiB during 2", "6", "peak RSS during 2", SERVICE, None, 100.0),
    ("tus: peak RSS under 100 MiB during 1", "6", "peak RSS during 1", TUS, None, 100.0),
    ("tus: peak RSS under 100 MiB during 2", "6", "peak RSS during 2", TUS, None, 100.0),
    ("tus: peak RSS under 100 MiB during 7", "6", "peak RSS during 7", TUS, None, 100.0),
    ("openai files.create: peak RSS under 100 MiB during 9", "6", "peak RSS during 9", SERVICE, None, 100.0),
    ("peak RSS under 100 MiB during 4 (concurrent ranges)", "6", "peak RSS during 4", SERVICE, None, 100.0),
]


def _target_line(rows: list[Row], target: tuple) -> list[str]:
    what, workload, title, system, other, bound = target
    row = next((row for row in rows if row.workload == workload and row.title.startswith(title)), None)
    summary = None if row is None else row.summary(system)
    if row is None or summary is None:
        return [what, "not measured", "–"]
    if other is None:
        figure = summary[0]
        met = figure < bound
        return [
            what,
            f"{_number(figure)} {row.unit.split()[0]}",
            "yes" if met else f"no: {figure / bound:.2f}× the bound",
        ]
    ratio = row.ratio(system, other)
    if ratio is None:
        return [what, f"{other} did not run", "–"]
    met = ratio >= bound
    return [what, f"×{ratio:.2f} of {other}", "yes" if met else f"no: short by {(bound - ratio) / bound:.0%}"]


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"×{value:.2f}"


def _row_notes(rows: list[Row]) -> list[str]:
    notes: dict[str, list[str]] = {}
    for row in rows:
        if row.note:
            notes.setdefault(row.note, []).append(f"{row.workload}. {row.title}")
    return [f"{'; '.join(dict.fromkeys(titles))}: {note}." for note, titles in notes.items()]


METHOD = [
    (
        "Every system runs as one process on this machine, on a free port, storing under one work folder on one disk; "
        "the Python ones under uvicorn with uvloop and httptools, as `files-service serve` runs."
    ),
    (
        "The client is bench/clients.py, HTTP/1.1 on raw asyncio streams, one keep-alive connection per client, "
        "so that it costs less than the servers it measures."
    ),
    (
        "Uploads are timed from the first request to the last answer "
        "(plus the flush, for a system that does not flush). "
        "Every upload's content is distinct, so the service's deduplication never skips a write. "
        "The page cache is written back and dropped before each timed upload run."
    ),
    "Runs go round-robin over the systems, so that a disturbance from outside spreads over all of them; each"
    " repetition starts one system further on, so that none always runs in the same place.",
    (
        '"service tus" is the same service spoken to through its tus front at /tus/, with the very requests the '
        "tus peers get, those tus-js-client sends: a POST for the upload, then a PATCH per chunk; and for 7 "
        "(`parallelUploads: 4`) four partial uploads sent at once and a final one that concatenates them. They "
        "are sent by the benchmark's lean client: tus-js-client under Node.js would take more of the shared "
        "cores than the servers it measures."
    ),
    (
        "Downloads read the very same file (the service's blob, hard-linked into the ceiling's folder), "
        "already in the page cache: they measure the servers, not the disk. Each system's first whole download "
        "is a row of its own (the service hashes a blob on its first whole download, once per blob and worker, "
        "and sends it unhashed after that); then every repetition makes several downloads of each kind per "
        "system, alternating between the systems: one download of 1 GiB takes half a second, which one "
        "scheduling hiccup on the shared machine can double. The server's CPU seconds per GiB sent are "
        "the figure that the machine's other work moves least."
    ),
    (
        "9 is what a platform team's code costs end to end: the `openai` SDK's own `files.create` (the SDK and "
        "httpx build the multipart body and send it from the benchmark's process, sharing the cores), "
        "against the ceilings receiving the same bytes in one raw request from the lean client, in the same "
        "run; its ratio to the tuned ceiling is what the SDK's request and the service's multipart reading, "
        "hashing and commit cost together."
    ),
]
