"""What the machine is (for the report) and the one thing the benchmark does to it: drop the page cache."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def describe() -> dict[str, str]:
    """Cores, processor, memory, kernel, Python and Node versions: what the figures depend on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        node = subprocess.run(
            ["node", "--version"], check=False, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        node = ""
    return {
        "cores": str(os.cpu_count()),
        "processor": model,
        "memory": memory,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node or "not found",
        "glibc": "-".join(platform.libc_ver()),
        "executable": sys.executable,
    }


def filesystem(path: Path) -> str:
    """The filesystem `path` is on, as "ext4 on /dev/vda": a tmpfs would make every fsync free."""
    path = path.resolve()
    best = ("", "unknown", "unknown")
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if path.is_relative_to(mount) and len(mount) >= len(best[0]):
                best = (mount, kind, device)
    except OSError:
        pass
    return f"{best[1]} on {best[2]}"


def drop_page_cache() -> bool:
    """Write back dirty pages and drop the page cache, so no run inherits the last one's I/O; needs root."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True
