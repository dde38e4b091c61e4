"""A Redis client whose round trips a test sees: each command sent alone, and each pipeline executed
(one round trip, whatever it holds), handed over as the list of its commands' arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Trip = list[tuple[Any, ...]]


def record_round_trips(client: Any, on_trip: Callable[[Trip], None]) -> Any:
    """`client`, changed in place so that every round trip it makes goes to `on_trip` first."""
    send, pipeline = client.execute_command, client.pipeline

    async def execute_command(*args: Any, **options: Any) -> Any:
        on_trip([args])
        return await send(*args, **options)

    def recorded_pipeline(*args: Any, **options: Any) -> Any:
        pipe = pipeline(*args, **options)
        execute = pipe.execute

        async def recorded(raise_on_error: bool = True) -> Any:
            if pipe.command_stack:
                on_trip([command for command, _ in pipe.command_stack])
            return await execute(raise_on_error)

        pipe.execute = recorded
        return pipe

    client.execute_command, client.pipeline = execute_command, recorded_pipeline
    return client
