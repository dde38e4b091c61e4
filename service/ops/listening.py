"""Checking that `serve` can listen on its address before it starts anything.

uvicorn finds a busy port only after the app has started (and swept the data directory),
and reports it among the log lines; a trial bind beforehand says it first, in one line.
"""

from __future__ import annotations

import errno
import socket


class CannotListen(Exception):
    """The address cannot be listened on: busy, not this machine's, or not allowed."""


def check_can_listen(host: str, port: int) -> None:
    """Bind every address `host` resolves to, as asyncio's server does (SO_REUSEADDR), then let go."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise CannotListen(f"cannot listen on {where}: {error.strerror}") from None
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as trial:
            trial.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                trial.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                trial.bind(address)
            except OSError as error:
                hint = " (is another service running? choose another --port)" if error.errno == errno.EADDRINUSE else ""
                reason = (error.strerror or str(error)).lower()
                raise CannotListen(f"cannot listen on {where}: {reason}{hint}") from None
