"""Crash points for fault-injection tests: with FILES_TEST_CRASH_AT=<name> the process dies there.

Read once at import, so a service started without it pays one comparison per point.
"""

from __future__ import annotations

import os

CRASH_AT = os.environ.get("FILES_TEST_CRASH_AT") or None
KILLED = 137  # the status of a process killed by SIGKILL, which this stands for


def crash_point(name: str) -> None:
    """Exit at once, as kill -9 would (no cleanup, no reply), when `name` is the configured point."""
    if name == CRASH_AT:
        os._exit(KILLED)
