"""Settings, read once from the environment at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from annotated_types import Ge, Le
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from service import redisurl

GiB = 1024**3
PREFIX = "FILES_"


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def origins(value: Any) -> Any:
    """`a, b/` in the environment is the two origins `a` and `b`: a list, not the JSON pydantic-settings expects."""
    if isinstance(value, str):
        value = value.split(",")
    return tuple(origin.strip().rstrip("/") for origin in value if origin.strip())


def redis_address(value: str | None) -> str | None:
    """Refuse a Redis URL the service could not connect with at start, not at its first request."""
    if value is not None:
        redisurl.parse(value)
    return value


def without_trailing_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value


LogLevel = Literal["debug", "info", "warning", "error", "critical"]
LogFormat = Literal["json", "text"]


class Settings(BaseSettings):
    """Every setting of the service; `FILES_<NAME>` in the environment sets `<name>`, an empty one is unset."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, frozen=True)

    data_dir: Path = Path("./data")
    redis_url: Annotated[str | None, AfterValidator(redis_address)] = None
    redis_prefix: str = "files:"
    session_ttl_seconds: int = Field(86400, ge=1)
    max_upload_bytes: int = Field(10 * GiB, ge=0)
    public_url: Annotated[str | None, BeforeValidator(without_trailing_slash)] = None
    lock_lease_seconds: float = Field(30.0, ge=1, le=30)
    sweep_interval_seconds: float = Field(30.0, ge=0.1, le=30)
    blob_grace_seconds: float = Field(3600.0, ge=0)
    max_json_bytes: int = Field(64 * 1024, ge=1024)
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    max_open_sessions: int = Field(1000, ge=1)
    body_stall_seconds: float = Field(60.0, ge=0.1)
    auth_tokens_file: Path | None = None
    cors_origins: Annotated[tuple[str, ...], NoDecode, BeforeValidator(origins)] = ()
    log_level: Annotated[LogLevel, BeforeValidator(lower)] = "info"
    log_format: Annotated[LogFormat, BeforeValidator(lower)] = "json"
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    events_maxlen: int = Field(100_000, ge=1)
    # Processes that store small uploads held in memory (service/storage/writers.py); 0: threads of the service.
    writer_processes: int = Field(2, ge=0, le=64)
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_retry_min_seconds: float = Field(0.5, ge=0.01)
    webhook_retry_max_seconds: float = Field(30.0, ge=0.01)
    webhook_timeout_seconds: float = Field(10.0, ge=0.1)
    # s3://<bucket>[/<prefix>]: blobs, staged uploads and entries in an object store instead of data_dir
    # (credentials and region from the usual AWS_* variables, which boto3 reads).
    storage_url: str | None = Field(None, pattern=r"^s3://[^/]+(/.*)?$")
    s3_endpoint_url: str | None = None
    # Downloads answered with a redirect to a short-lived presigned URL of the object store (tokens checked first).
    s3_presigned_downloads: bool = False
    tus_bucket: str = "uploads"
    openai_bucket: str = Field("openai", pattern=r"^[a-zA-Z0-9_-]{1,63}$")
    openai_upload_ttl_seconds: int = Field(3600, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what the constructor is given: `from_env` is the one place that reads the environment."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        try:
            return cls(**Environment(cls, environ)())
        except ValidationError as error:
            raise ConfigError(explain(cls, error.errors()[0], environ)) from None


class Environment(EnvSettingsSource):
    """The `FILES_` variables of a given mapping (the process's, or a test's) rather than always `os.environ`."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self.environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def explain(settings_cls: type[Settings], error: ErrorDetails, environ: Mapping[str, str]) -> str:
    """Pydantic's complaint about one field as one line that names the variable: `FILES_X must be ..., got '...'`."""
    field = str(error["loc"][0])
    name = PREFIX + field.upper()
    got = repr(environ.get(name))
    info = settings_cls.model_fields[field]
    if error["type"] in ("int_parsing", "float_parsing", "int_from_float"):
        return f"{name} must be a {getattr(info.annotation, '__name__', info.annotation)}, got {got}"
    if error["type"] == "literal_error":
        return f"{name} must be one of {', '.join(get_args(info.annotation))}, got {got}"
    low = next((bound.ge for bound in info.metadata if isinstance(bound, Ge)), None)
    high = next((bound.le for bound in info.metadata if isinstance(bound, Le)), None)
    if low is not None:
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        return f"{name} must be {bound}, got {got}"
    if error["type"] == "value_error":
        return f"{name}: {error['ctx']['error']}, got {got}"
    return f"{name}: {error['msg']}, got {got}"
