"""Scripts sent in a pipeline with other commands, so that steps of different slots that do not
wait on each other's answer cost one round trip.

A script goes into a pipeline (never a transaction, so a cluster client sends each command to
its slot's node) whole, by EVAL: redis-py's `Script` objects would ask the server whether it has
them, one more round trip, before every such pipeline, and EVALSHA would fail (NOSCRIPT) on a
server that lost its scripts (restarted, failed over, a new node) after the other commands ran,
and those may not run twice. The server caches a script it was sent whole, as it does one loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript


def call(pipe: Any, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int | float]) -> None:
    """Queue `script` on `pipe`."""
    pipe.eval(script.script, len(keys), *keys, *args)
