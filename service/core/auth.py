"""Bearer tokens: who may do what to which bucket.

Tokens are kept only as SHA-256 hashes in FILES_AUTH_TOKENS_FILE, read at
start. A presented token is hashed and compared against every known hash in
constant time, so neither the comparison nor the lookup tells how close a guess was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator

from service.config import ConfigError
from service.core import names
from service.core.errors import Forbidden, Unauthorized

Action = Literal["read", "write", "delete"]
ACTIONS: tuple[Action, ...] = get_args(Action)
ALL_BUCKETS = "*"
# What `token new` grants unless told otherwise.
DEFAULT_GRANTS: dict[str, list[Action]] = {ALL_BUCKETS: ["read", "write"]}


class TokenEntry(BaseModel):
    name: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")  # upper case too: PowerShell's Get-FileHash writes it
    buckets: dict[str, list[Action]]

    @field_validator("buckets")
    @classmethod
    def _bucket_names(cls, value: dict[str, list[Action]]) -> dict[str, list[Action]]:
        for bucket in value:
            if bucket != ALL_BUCKETS and names.bucket_error(bucket) is not None:
                raise ValueError(f"{bucket!r} is neither a bucket name nor '*'")
        return value


class TokenFile(BaseModel):
    tokens: list[TokenEntry]

    @field_validator("tokens")
    @classmethod
    def _unique(cls, value: list[TokenEntry]) -> list[TokenEntry]:
        # Sessions and their limit belong to a token's name: two tokens must not share one.
        seen: set[str] = set()
        for token in value:
            if token.name in seen:
                raise ValueError(f"the token name {token.name!r} appears twice; names must be unique")
            seen.add(token.name)
        return value


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's name and grants, or everyone when the service is open."""

    name: str | None
    grants: dict[str, frozenset[str]] = field(default_factory=dict)
    open: bool = False

    def may(self, action: Action, bucket: str) -> bool:
        if self.open:
            return True
        return action in self.grants.get(bucket, frozenset()) or action in self.grants.get(ALL_BUCKETS, frozenset())

    def buckets_for(self, action: Action) -> frozenset[str] | None:
        """The buckets the principal may do `action` in; None when that is every bucket."""
        if self.open or action in self.grants.get(ALL_BUCKETS, frozenset()):
            return None
        return frozenset(bucket for bucket, granted in self.grants.items() if action in granted)

    def actions(self) -> dict[str, list[Action]]:
        """The actions per bucket ('*' for every bucket), in the order read, write, delete."""
        if self.open:
            return {ALL_BUCKETS: list(ACTIONS)}
        return {bucket: [action for action in ACTIONS if action in granted] for bucket, granted in self.grants.items()}

    def require(self, action: Action, bucket: str) -> None:
        if not self.may(action, bucket):
            raise Forbidden(f"this token may not {action} in bucket {bucket!r}")


EVERYONE = Principal(name=None, open=True)


class Authenticator:
    """Turns an Authorization header into a Principal; open when no token file is configured."""

    def __init__(self, tokens: list[TokenEntry] | None) -> None:
        self.open = tokens is None
        self._tokens = [
            (bytes.fromhex(token.sha256), Principal(token.name, {b: frozenset(a) for b, a in token.buckets.items()}))
            for token in tokens or []
        ]

    @classmethod
    def from_file(cls, path: Path | None) -> Authenticator:
        if path is None:
            return cls(None)
        try:
            return cls(TokenFile.model_validate_json(path.read_bytes()).tokens)
        except OSError as error:
            raise ConfigError(f"FILES_AUTH_TOKENS_FILE cannot be read: {error}") from None
        except ValidationError as error:
            raise ConfigError(f"FILES_AUTH_TOKENS_FILE is not a valid token file: {problems(error)}") from None

    def authenticate(self, authorization: str | None) -> Principal:
        if self.open:
            return EVERYONE
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this service needs 'Authorization: Bearer <token>'")
        presented = hashlib.sha256(token.strip().encode()).digest()
        found = None
        for known, principal in self._tokens:
            if hmac.compare_digest(presented, known):
                found = principal
        if found is None:
            raise Unauthorized("the bearer token is not valid")
        return found


class NewTokenEntry(TypedDict):
    """A token file's entry as JSON: what `token new` prints or adds to the file."""

    name: str
    sha256: str
    buckets: dict[str, list[Action]]


def new_token(name: str, buckets: dict[str, list[Action]] | None = None) -> tuple[str, NewTokenEntry]:
    """A fresh random token and its token-file entry (by default: read and write everywhere)."""
    token = secrets.token_hex(32)  # hex: never starts with '-', so `--token VALUE` always parses
    entry: NewTokenEntry = {
        "name": name,
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
        "buckets": buckets or DEFAULT_GRANTS,
    }
    return token, entry


def problems(error: ValidationError) -> str:
    """A token file's validation errors, on one line: where each is, what is wrong, what was found."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'the file'}: {item['msg']}, got {_short(item['input'])}"
        for item in error.errors()
    )


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
