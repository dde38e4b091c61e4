"""The peers and the benchmark's own tools, installed by the benchmark into bench/.peers/ (git ignores it).

They are not the service's dependencies: tuspyserver, its FastAPI and matplotlib go into a
venv of their own, @tus/server and @tus/file-store into a node_modules of their own, each
pinned so that two runs compare the same code, and each installed only when missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / ".peers"
VENV = PEERS / "venv"
NODE = PEERS / "node"

TUSPYSERVER = "tuspyserver==4.4.3"
# The same uvicorn settings as the service (uvloop, httptools) need these beside FastAPI.
PYTHON_PEER = [TUSPYSERVER, "uvicorn>=0.30", "uvloop>=0.19", "httptools>=0.6"]
PYTHON_PEER_IMPORTS = "import tuspyserver, fastapi, uvicorn, uvloop, httptools"
CHART = ["matplotlib>=3.8"]
NODE_PEER = {"@tus/server": "2.4.5", "@tus/file-store": "2.1.1"}


class Unavailable(Exception):
    """A peer or tool could not be installed here (no network, no node, ...): said in the report."""


def venv_python() -> Path:
    return VENV / "bin" / "python"


def _run(command: list[str | Path], what: str, cwd: Path | None = None, timeout: float = 300) -> None:
    try:
        done = subprocess.run(command, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{what}: {error}") from None
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{what} failed: {' '.join(last)}")


def _imports(python: Path, statement: str) -> bool:
    if not python.exists():
        return False
    return subprocess.run([python, "-c", statement], check=False, capture_output=True).returncode == 0


def _ensure_venv_packages(packages: list[str], statement: str, install: bool) -> Path:
    python = venv_python()
    if _imports(python, statement):
        return python
    if not install:
        raise Unavailable("not installed, and --no-peers installs nothing")
    if not python.exists():
        _run([sys.executable, "-m", "venv", VENV], "creating bench/.peers/venv")
    _run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *packages],
        f"pip install {' '.join(packages)}",
    )
    if not _imports(python, statement):
        raise Unavailable(f"{' '.join(packages)} installed but cannot be imported")
    return python


def ensure_tuspyserver() -> Path:
    """The Python of the venv that runs tuspyserver."""
    return _ensure_venv_packages(PYTHON_PEER, PYTHON_PEER_IMPORTS, install=True)


def _node_installed() -> bool:
    for package, version in NODE_PEER.items():
        manifest = NODE / "node_modules" / package / "package.json"
        if not manifest.exists() or json.loads(manifest.read_text()).get("version") != version:
            return False
    return True


def ensure_tus_node() -> Path:
    """The folder whose node_modules holds @tus/server and @tus/file-store."""
    if shutil.which("node") is None:
        raise Unavailable("node is not on PATH")
    if _node_installed():
        return NODE
    if shutil.which("npm") is None:
        raise Unavailable("npm is not on PATH")
    NODE.mkdir(parents=True, exist_ok=True)
    manifest = NODE / "package.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"private": True, "description": "benchmark peers, installed by bench/run.py"}))
    specs = [f"{package}@{version}" for package, version in NODE_PEER.items()]
    _run(
        ["npm", "install", "--no-audit", "--no-fund", "--save-exact", *specs],
        f"npm install {' '.join(specs)}",
        cwd=NODE,
    )
    if not _node_installed():
        raise Unavailable(f"npm install {' '.join(specs)} left the packages missing")
    return NODE


def chart_python(install: bool) -> Path:
    """A Python that can import matplotlib: the running one, or the peers' venv (installed there when missing)."""
    if _imports(Path(sys.executable), "import matplotlib"):
        return Path(sys.executable)
    return _ensure_venv_packages(CHART, "import matplotlib", install)
