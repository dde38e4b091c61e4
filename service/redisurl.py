"""FILES_REDIS_URL's forms, read at start so that a malformed one stops the service with one line saying why.

Plain text only (no Redis client here): the settings check it, and the core imports the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_FORM = "redis+sentinel://host:port[,host:port...]/<master name>[/<db>]"
SENTINEL_PORT = 26379
CLUSTER_SCHEME = "redis+cluster"
CLUSTER_FORM = "redis+cluster://host:port[,host:port...]"
REDIS_PORT = 6379


@dataclass(frozen=True)
class SentinelAddress:
    """A Sentinel-managed Redis: where to ask for the master, its name, and what to use on it."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class ClusterAddress:
    """A Redis Cluster: some of its nodes to ask for the others and for which serves which slots."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None


def parse(url: str) -> str | SentinelAddress | ClusterAddress:
    """A plain `redis://`, `rediss://` or `unix://` URL as it is (checked), the Sentinels of
    `redis+sentinel://`, or the nodes of `redis+cluster://`.

    Raises ValueError that says what is wrong.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in ("redis", "rediss", "unix", SENTINEL_SCHEME, CLUSTER_SCHEME):
        raise ValueError(f"expected a redis://, rediss://, unix://, {SENTINEL_SCHEME}:// or {CLUSTER_SCHEME}:// URL")
    if scheme.lower() == SENTINEL_SCHEME:
        return _sentinel(rest)
    if scheme.lower() == CLUSTER_SCHEME:
        return _cluster(rest)
    parts = urlsplit(url)
    parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    database = parts.path.strip("/")
    if scheme.lower() != "unix" and database and not database.isdigit():
        raise ValueError("the database (the URL's path) must be a number")
    return url


def _sentinel(rest: str) -> SentinelAddress:
    location, _, path = rest.partition("/")
    credentials, _, hosts = location.rpartition("@")
    username, _, password = credentials.partition(":")
    names = path.split("/")
    if not hosts or not names[0] or len(names) > 2:
        raise ValueError(f"expected {SENTINEL_FORM}")
    db = names[1] if len(names) == 2 and names[1] else "0"
    if not db.isdigit():
        raise ValueError(f"the database must be a number ({SENTINEL_FORM})")
    return SentinelAddress(
        sentinels=tuple(_host_port(host, SENTINEL_PORT, SENTINEL_FORM) for host in hosts.split(",")),
        master=unquote(names[0]),
        db=int(db),
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def _cluster(rest: str) -> ClusterAddress:
    location, _, path = rest.partition("/")
    credentials, _, hosts = location.rpartition("@")
    username, _, password = credentials.partition(":")
    if not hosts or path.strip("/"):
        raise ValueError(f"expected {CLUSTER_FORM} (a cluster has no databases)")
    return ClusterAddress(
        nodes=tuple(_host_port(host, REDIS_PORT, CLUSTER_FORM) for host in hosts.split(",")),
        username=unquote(username) or None,
        password=unquote(password) or None,
    )


def _host_port(text: str, default_port: int, form: str) -> tuple[str, int]:
    """`host:port`, `[IPv6 address]:port`, or either without `:port` (`default_port`)."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    port = port or str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not a host:port ({form})")
    return host, int(port)
