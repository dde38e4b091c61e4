"""Crash points for fault-injection tests: with FILES_TEST_CRASH_AT=<name> the process dies there.

Read once at import, so a service started without it pays one comparison per point.
"""

from __future__ import annotations

import os
import signal

CRASH_AT = os.environ.get("FILES_TEST_CRASH_AT") or None
KILLED = 137  # the status of a process killed by SIGKILL, which this stands for
_service: int | None = None  # the service process, where this process works for it


def die_with(pid: int) -> None:
    """In a helper process of the service (a writer), make a crash point kill the service too: the
    point stands for the service dying there, whichever of its processes reaches it."""
    global _service
    _service = pid


def crash_point(name: str) -> None:
    """Exit at once, as kill -9 would (no cleanup, no reply), when `name` is the configured point."""
    if name == CRASH_AT:
        if _service is not None:
            os.kill(_service, signal.SIGKILL)
        os._exit(KILLED)
