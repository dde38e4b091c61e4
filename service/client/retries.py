"""Trying requests again while their failures may pass: a network that breaks, a busy or restarting service."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from service.client.api import ApiError
from service.client.events import EventHandler, Retrying, ignore

T = TypeVar("T")

FIRST_DELAY = 0.5
MAX_DELAY = 15.0
DEFAULT_RETRY_SECONDS = 60.0


class Retries:
    """Tries again after errors that may pass (network, busy, 503), with exponential backoff, for `seconds`.

    The time counts from the first failure in a row: each success starts it afresh, so a long
    transfer over a flaky network goes on as long as it keeps making progress.
    """

    def __init__(self, seconds: float = DEFAULT_RETRY_SECONDS, on_event: EventHandler = ignore) -> None:
        self.seconds = seconds
        self.on_event = on_event
        self.failures = 0
        self.first_failure = 0.0

    def failed(self, error: httpx.TransportError | ApiError) -> None:
        """Wait before the next try; re-raise the error when it will not pass or the time is up."""
        if isinstance(error, ApiError) and not error.transient or _unknown_host(error):
            raise error
        now = time.monotonic()
        if self.failures == 0:
            self.first_failure = now
        self.failures += 1
        left = self.first_failure + self.seconds - now
        if left <= 0:
            raise error
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (self.failures - 1), left)
        self.on_event(Retrying(error, delay))
        time.sleep(delay)

    def succeeded(self) -> None:
        self.failures = 0

    def call(self, operation: Callable[[], T]) -> T:
        """The operation's result, tried again while its failures may pass."""
        while True:
            try:
                result = operation()
            except (httpx.TransportError, ApiError) as error:
                self.failed(error)
            else:
                self.succeeded()
                return result


def _unknown_host(error: BaseException) -> bool:
    """Whether the error is a host name that does not resolve (a typo in --url): that will not pass. A
    temporary failure of the resolver (EAI_AGAIN) may, and is tried again."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return cause.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
        cause = cause.__cause__ or cause.__context__
    return False
