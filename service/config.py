"""Settings, read once from the environment at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

GiB = 1024**3


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    redis_url: str | None = None
    redis_prefix: str = "files:"
    session_ttl_seconds: int = 86400
    max_upload_bytes: int = 10 * GiB
    public_url: str | None = None
    lock_lease_seconds: float = 30.0
    sweep_interval_seconds: float = 30.0
    blob_grace_seconds: float = 3600.0
    max_json_bytes: int = 64 * 1024
    max_header_bytes: int = 16 * 1024
    max_open_sessions: int = 1000
    body_stall_seconds: float = 60.0
    auth_tokens_file: Path | None = None
    cors_origins: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "json"
    shutdown_grace_seconds: float = 30.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def number(name: str, default: float, kind: type = int, low: float = 0, high: float | None = None):
            raw = environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a {kind.__name__}, got {raw!r}") from None
            if value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f"at least {low}"
                raise ConfigError(f"{name} must be {bound}, got {raw!r}")
            return value

        def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
            value = (environ.get(name) or default).lower()
            if value not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {environ.get(name)!r}")
            return value

        public_url = environ.get("FILES_PUBLIC_URL") or None
        return cls(
            data_dir=Path(environ.get("FILES_DATA_DIR") or "./data"),
            redis_url=environ.get("FILES_REDIS_URL") or None,
            redis_prefix=environ.get("FILES_REDIS_PREFIX", "files:"),
            session_ttl_seconds=number("FILES_SESSION_TTL_SECONDS", 86400, low=1),
            max_upload_bytes=number("FILES_MAX_UPLOAD_BYTES", 10 * GiB),
            public_url=public_url.rstrip("/") if public_url else None,
            lock_lease_seconds=number("FILES_LOCK_LEASE_SECONDS", 30.0, float, low=1, high=30),
            sweep_interval_seconds=number("FILES_SWEEP_INTERVAL_SECONDS", 30.0, float, low=0.1, high=30),
            blob_grace_seconds=number("FILES_BLOB_GRACE_SECONDS", 3600.0, float),
            max_json_bytes=number("FILES_MAX_JSON_BYTES", 64 * 1024, low=1024),
            max_header_bytes=number("FILES_MAX_HEADER_BYTES", 16 * 1024, low=1024),
            max_open_sessions=number("FILES_MAX_OPEN_SESSIONS", 1000, low=1),
            body_stall_seconds=number("FILES_BODY_STALL_SECONDS", 60.0, float, low=0.1),
            auth_tokens_file=Path(tokens) if (tokens := environ.get("FILES_AUTH_TOKENS_FILE")) else None,
            log_level=choice("FILES_LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")),
            log_format=choice("FILES_LOG_FORMAT", "json", ("json", "text")),
            shutdown_grace_seconds=number("FILES_SHUTDOWN_GRACE_SECONDS", 30.0, float),
            cors_origins=tuple(
                origin.strip().rstrip("/")
                for origin in environ.get("FILES_CORS_ORIGINS", "").split(",")
                if origin.strip()
            ),
        )
