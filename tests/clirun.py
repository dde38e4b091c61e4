"""Running `python -m service ...` from the repository in a subprocess, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(*arguments: str, env: dict[str, str] | None = None, timeout: float = 15) -> subprocess.CompletedProcess:
    """Run the CLI with no FILES_* variable but those in `env`; the test fails if it runs past `timeout`."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FILES_")}
    with subprocess.Popen(
        [sys.executable, "-m", "service", *arguments],
        cwd=REPO,
        env={**environment, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"files-service {' '.join(arguments)} still ran after {timeout} s:\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
