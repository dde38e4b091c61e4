"""Limits and browser access: CORS, the JSON body and header caps, open sessions per client,
a stalled request body, and the defaults the README documents."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from apihelpers import assert_error, download, send, session_path, start, start_session, stream
from conftest import BASE_URL, http_client
from starlette.applications import Starlette

from service.config import Settings
from service.core.auth import new_token

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
ORIGIN = "https://app.example"


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(name, "").split(",") if item.strip()}


# --- CORS --------------------------------------------------------------------------------------


def preflight(client: httpx.AsyncClient, path: str, origin: str) -> Awaitable[httpx.Response]:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Upload-Offset, Authorization, Content-Type",
        },
    )


async def test_cors_is_off_by_default(client):
    response = await client.get("/v1/files", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    answer = await preflight(client, "/v1/files", ORIGIN)
    assert "access-control-allow-origin" not in answer.headers


@pytest.fixture
def token_file(tmp_path: Path) -> tuple[str, Path]:
    token, entry = new_token("browser")
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    return token, path


@pytest.mark.parametrize("guarded", [False, True], ids=["open", "with-tokens"])
@pytest.mark.parametrize("path", ["/v1/files", "/v1/files/session:0123456789abcdef0123456789abcdef"])
async def test_a_preflight_from_the_allowed_origin_succeeds(make_app, token_file, guarded, path):
    """Browsers send no credentials on a preflight, so it needs no token even when tokens are on."""
    tokens = {"auth_tokens_file": token_file[1]} if guarded else {}
    async with http_client(make_app(cors_origins=(ORIGIN,), **tokens)) as client:
        allowed = await preflight(client, path, ORIGIN)
        refused = await preflight(client, path, "https://evil.example")
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert {"upload-offset", "authorization", "content-type"} <= header_list(allowed, "access-control-allow-headers")
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert refused.status_code >= 400
    assert refused.headers.get("access-control-allow-origin") != "https://evil.example"


@pytest.fixture
async def cors_client(make_app) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(make_app(cors_origins=(ORIGIN,))) as client:
        client.headers["Origin"] = ORIGIN
        yield client


async def test_responses_let_the_page_read_upload_offset(cors_client):
    """A page must read Upload-Offset both from progress and from a 409 that says where to resume."""
    session_id = await start_session(cors_client, "b", "k", 10)
    progress = await send(cors_client, session_id, b"0123", offset=0)
    conflict = await send(cors_client, session_id, b"0123", offset=0)
    for response, status in ((progress, 200), (conflict, 409)):
        assert response.status_code == status, response.text
        assert response.headers["upload-offset"] == "4"
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "upload-offset" in header_list(response, "access-control-expose-headers")


async def test_a_star_origin_lets_any_page_call(make_app):
    async with http_client(make_app(cors_origins=("*",))) as client:
        answer = await preflight(client, "/v1/files", "https://anywhere.example")
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] in ("*", "https://anywhere.example")


async def test_other_origins_get_no_cors_headers(cors_client):
    response = await cors_client.get("/v1/files", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


# --- request size caps -------------------------------------------------------------------------

JSON_LIMIT = 1024


def padded_json(length: int) -> bytes:
    """A valid create-session body of exactly `length` bytes (JSON allows trailing whitespace)."""
    body = json.dumps({"bucket": "b", "key": "k", "mime_type": "text/plain", "size": 3}).encode()
    return body + b" " * (length - len(body))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("length", "status"), [(JSON_LIMIT, 200), (JSON_LIMIT + 1, 413), (50 * JSON_LIMIT, 413)])
async def test_a_json_body_over_the_limit_is_refused_with_413(make_app, redis, chunked, length, status):
    body = padded_json(length)
    content = stream(body[:500], body[500:]) if chunked else body
    async with http_client(make_app(max_json_bytes=JSON_LIMIT)) as client:
        response = await client.post("/v1/files", content=content)
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert assert_error(response, 413)["code"] == "too_large"
        assert await redis.keys("*session:*") == []


@pytest.mark.parametrize(("pad", "status"), [(100, 200), (2000, 431)])
async def test_headers_over_the_limit_are_refused_with_431(make_app, pad, status):
    async with http_client(make_app(max_header_bytes=1024)) as client:
        response = await client.get("/v1/files", headers={"X-Pad": "x" * pad})
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert "1024" in assert_error(response, 431)["detail"]


# --- open sessions per token, or per address when open ------------------------------------------

MAX_OPEN = 2


def tokens_app(make_app, tmp_path: Path) -> tuple[Starlette, list[dict[str, str]]]:
    issued = [new_token(name) for name in ("alice", "bob")]
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry for _, entry in issued]}))
    app = make_app(auth_tokens_file=path, max_open_sessions=MAX_OPEN)
    return app, [{"Authorization": f"Bearer {token}"} for token, _ in issued]


def address_app(make_app, tmp_path: Path) -> tuple[Starlette, list[dict[str, str]]]:
    return make_app(max_open_sessions=MAX_OPEN), [{}, {}]


def two_clients(app: Starlette, headers: list[dict[str, str]]) -> list[httpx.AsyncClient]:
    """Two clients told apart by their token, or (when open) by their address."""
    return [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(f"10.0.0.{number}", 40000)),
            base_url=BASE_URL,
            headers=given,
        )
        for number, given in enumerate(headers, start=1)
    ]


async def complete(client: httpx.AsyncClient, session_id: str) -> None:
    assert (await send(client, session_id, b"abc", offset=0)).status_code == 200


async def cancel(client: httpx.AsyncClient, session_id: str) -> None:
    assert (await client.delete(session_path(session_id))).status_code == 204


@pytest.mark.parametrize("free", [complete, cancel], ids=["complete", "cancel"])
@pytest.mark.parametrize("build", [tokens_app, address_app], ids=["per-token", "per-address"])
async def test_open_sessions_are_capped_per_client(make_app, tmp_path, build, free):
    app, headers = build(make_app, tmp_path)
    first, second = two_clients(app, headers)
    async with first, second:
        opened = [await start_session(first, "b", f"k{number}", 3) for number in range(MAX_OPEN)]
        refused = assert_error(await start(first, "b", "one-more", 3), 429)
        assert refused["code"] == "too_many_sessions"
        assert (await start(second, "b", "someone-else", 3)).status_code == 200
        await free(first, opened[0])
        assert (await start(first, "b", "after-a-slot-freed", 3)).status_code == 200
        assert_error(await start(first, "b", "full-again", 3), 429)


# --- a stalled body ----------------------------------------------------------------------------

STALL = 0.3
CONTENT = b"0123456789"


async def stalling(first: bytes, never: anyio.Event) -> AsyncIterator[bytes]:
    """Sends `first`, then nothing (`never` is set only at teardown)."""
    yield first
    await never.wait()
    yield b"never sent"


@pytest.fixture
async def never() -> AsyncIterator[anyio.Event]:
    event = anyio.Event()
    yield event
    event.set()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_stalled_body_ends_with_408_and_keeps_what_arrived(make_app, never, declared):
    headers = {"Content-Length": str(len(CONTENT))} if declared else {}
    async with http_client(make_app(body_stall_seconds=STALL)) as client:
        session_id = await start_session(client, "b", "k", len(CONTENT))
        started = time.monotonic()
        with anyio.fail_after(10):
            response = await send(client, session_id, stalling(CONTENT[:4], never), offset=0, **headers)
        assert time.monotonic() - started >= STALL
        assert assert_error(response, 408)["code"] == "body_stalled"

        info = await client.get(session_path(session_id))
        assert info.json()["offset"] == 4
        finished = await send(client, session_id, CONTENT[4:], offset=4)
        assert finished.status_code == 200, finished.text
        assert (await download(client, "b", "k")).content == CONTENT


async def paced(parts: list[bytes], gap: float) -> AsyncIterator[bytes]:
    for part in parts:
        await anyio.sleep(gap)
        yield part


async def test_a_slow_but_steady_body_is_not_cut_off(make_app):
    """The stall limit is on each silence, not on the whole request."""
    parts = [CONTENT[first : first + 2] for first in range(0, len(CONTENT), 2)]
    async with http_client(make_app(body_stall_seconds=STALL)) as client:
        body = await upload_paced(client, parts, STALL / 3)
    assert body["bytes"] == len(CONTENT)


async def upload_paced(client: httpx.AsyncClient, parts: list[bytes], gap: float) -> dict[str, Any]:
    session_id = await start_session(client, "b", "k", len(CONTENT))
    response = await send(client, session_id, paced(parts, gap), offset=0)
    assert response.status_code == 200, response.text
    return response.json()


# --- defaults ----------------------------------------------------------------------------------

# Environment variable -> Settings field, for every limit and access setting.
LIMITS = {
    "FILES_MAX_UPLOAD_BYTES": "max_upload_bytes",
    "FILES_MAX_JSON_BYTES": "max_json_bytes",
    "FILES_MAX_HEADER_BYTES": "max_header_bytes",
    "FILES_MAX_OPEN_SESSIONS": "max_open_sessions",
    "FILES_BODY_STALL_SECONDS": "body_stall_seconds",
    "FILES_SESSION_TTL_SECONDS": "session_ttl_seconds",
    "FILES_LOCK_LEASE_SECONDS": "lock_lease_seconds",
    "FILES_BLOB_GRACE_SECONDS": "blob_grace_seconds",
    "FILES_AUTH_TOKENS_FILE": "auth_tokens_file",
    "FILES_CORS_ORIGINS": "cors_origins",
}
UNSET = {None, ()}


def readme_defaults() -> dict[str, str]:
    """Variable -> the first word of its default in the README's configuration table."""
    rows = re.findall(r"^\| `(FILES_[A-Z_]+)` \| (.*?) \|", (REPO / "README.md").read_text(), re.MULTILINE)
    return {name: default.replace("`", "").split()[0] for name, default in rows}


@pytest.mark.parametrize(("variable", "field"), LIMITS.items())
def test_every_default_matches_the_readme(variable, field):
    documented = readme_defaults()
    assert variable in documented, f"README's configuration table has no row for {variable}"
    default = getattr(Settings(), field)
    if default in UNSET:
        assert documented[variable] == "unset", (variable, documented[variable])
    else:
        assert float(documented[variable]) == default, (variable, documented[variable], default)
    assert getattr(Settings.from_env({}), field) == default


def test_settings_read_every_limit_from_the_environment():
    environ = {
        "FILES_MAX_JSON_BYTES": "2048",
        "FILES_MAX_HEADER_BYTES": "4096",
        "FILES_MAX_OPEN_SESSIONS": "7",
        "FILES_BODY_STALL_SECONDS": "2.5",
        "FILES_AUTH_TOKENS_FILE": "/etc/files/tokens.json",
        "FILES_CORS_ORIGINS": "https://a.example/, https://b.example",
    }
    settings = Settings.from_env(environ)
    expected = Settings(
        max_json_bytes=2048,
        max_header_bytes=4096,
        max_open_sessions=7,
        body_stall_seconds=2.5,
        auth_tokens_file=Path("/etc/files/tokens.json"),
        cors_origins=("https://a.example", "https://b.example"),
    )
    assert settings == expected
