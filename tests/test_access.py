"""Access control: bearer tokens kept as SHA-256 hashes, per-bucket actions, session ownership,
open mode, invalid token files and `files-service token new`.

Every action is tried by every kind of caller. The tokens under test live in one token file; a
second file gives the same tokens every right, and an "admin" app built on it (same fake Redis,
same data directory) makes the sessions a case needs, owned by the caller: so a token that may
not (or no longer) write still finds a session of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from apihelpers import assert_error, session_path, start_session, upload
from clirun import run_cli
from conftest import http_client

from service.core.auth import new_token

pytestmark = pytest.mark.anyio

ALL = ["read", "write", "delete"]
CONTENT = b"the content of b/k"
SESSION_SIZE = 10

# Name -> grants of every token under test; "b" is the bucket every action works on.
GRANTS: dict[str, dict[str, list[str]]] = {
    "read-b": {"b": ["read"]},
    "write-b": {"b": ["write"]},
    "delete-b": {"b": ["delete"]},
    "no-read-b": {"b": ["write", "delete"]},
    "no-write-b": {"b": ["read", "delete"]},
    "no-delete-b": {"b": ["read", "write"]},
    "other-only": {"other": ALL},
    "star": {"*": ALL},
}
ISSUED = {name: new_token(name) for name in GRANTS}
SECRET = {name: token for name, (token, _) in ISSUED.items()}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[name]}"}


def write_token_file(path: Path, grants: dict[str, dict[str, list[str]]]) -> Path:
    tokens = [{**ISSUED[name][1], "buckets": buckets} for name, buckets in grants.items()]
    path.write_text(json.dumps({"tokens": tokens}))
    return path


# --- callers and actions -----------------------------------------------------------------------

ALLOWED, FORBIDDEN, UNAUTHENTICATED = "allowed", "forbidden", "unauthenticated"


@dataclass(frozen=True)
class Caller:
    """A kind of caller; `token` names its token given the right the action needs (None: no valid token)."""

    id: str
    outcome: str
    token: Callable[[str], str | None]
    header: str | None = None  # the Authorization header of a caller with no valid token

    def headers(self, right: str) -> dict[str, str]:
        name = self.token(right)
        if name is not None:
            return bearer(name)
        return {} if self.header is None else {"Authorization": self.header}


CALLERS = [
    Caller("with-the-right", ALLOWED, lambda right: f"{right}-b"),
    Caller("without-the-action", FORBIDDEN, lambda right: f"no-{right}-b"),
    Caller("other-bucket-only", FORBIDDEN, lambda right: "other-only"),
    Caller("star", ALLOWED, lambda right: "star"),
    Caller("bad-token", UNAUTHENTICATED, lambda right: None, "Bearer not-a-token-anyone-was-given"),
    Caller("no-header", UNAUTHENTICATED, lambda right: None),
    Caller("basic-scheme", UNAUTHENTICATED, lambda right: None, "Basic x"),
    Caller("bearer-and-nothing", UNAUTHENTICATED, lambda right: None, "Bearer"),
]


@dataclass
class Scene:
    """The state one case runs against; `admin` is a client on which the session's owner may do everything."""

    admin: httpx.AsyncClient
    redis: Any
    owner: dict[str, str]
    session_id: str = ""

    async def offset(self) -> int | None:
        response = await self.admin.get(session_path(self.session_id), headers=self.owner)
        return response.json()["offset"] if response.status_code == 200 else None

    async def file_status(self) -> int:
        return (await self.admin.get("/v1/files/b/k", headers=bearer("star"))).status_code

    async def sessions(self) -> int:
        return len(await self.redis.keys("*session:*"))


async def unchanged(scene: Scene) -> None:
    return None


@dataclass(frozen=True)
class Action:
    id: str
    right: str
    method: str
    path: str  # "{session}" stands for the id of a session the caller owns
    status: int  # on success
    json: dict[str, Any] | None = None
    content: bytes | None = None
    body: bytes | None = None  # the exact body a success returns, where it is known
    observe: Callable[[Scene], Awaitable[object]] = unchanged  # state the action changes, when it is allowed
    forbidden_status: int = 403

    @property
    def session(self) -> bool:
        return "{session}" in self.path

    async def call(self, client: httpx.AsyncClient, scene: Scene, headers: dict[str, str]) -> httpx.Response:
        path = self.path.format(session=scene.session_id)
        return await client.request(self.method, path, headers=headers, json=self.json, content=self.content)


SESSION = "/v1/files/session:{session}"
ACTIONS = [
    Action(
        "create-session",
        "write",
        "POST",
        "/v1/files",
        200,
        json={"bucket": "b", "key": "new", "mime_type": "text/plain", "size": 5},
        observe=Scene.sessions,
    ),
    Action("upload-chunk", "write", "POST", SESSION, 200, content=b"01234", observe=Scene.offset),
    Action("session-info", "read", "GET", SESSION, 200),
    Action("cancel", "write", "DELETE", SESSION, 204, body=b"", observe=Scene.offset),
    # Listing buckets is never refused to a valid token: the list is filtered instead (tested below).
    Action("list-buckets", "read", "GET", "/v1/files", 200, forbidden_status=200),
    Action("list-files", "read", "GET", "/v1/files/b", 200),
    Action("file-info", "read", "GET", "/v1/files/b/k", 200),
    Action("download", "read", "GET", "/v1/files/b/k:content", 200, body=CONTENT),
    Action("download-head", "read", "HEAD", "/v1/files/b/k:content", 200, body=b""),
    Action("delete", "delete", "DELETE", "/v1/files/b/k", 200, observe=Scene.file_status),
]


def ids(items: list[Any]) -> list[str]:
    return [item.id for item in items]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def token_files(tmp_path: Path) -> tuple[Path, Path]:
    """(the file under test, a file that gives the same tokens every right on every bucket)."""
    files = (
        write_token_file(tmp_path / "tokens.json", GRANTS),
        write_token_file(tmp_path / "admin-tokens.json", {name: {"*": ALL} for name in GRANTS}),
    )
    assert not any(secret in path.read_text() for secret in SECRET.values() for path in files), "a plain token"
    return files


@pytest.fixture
async def guarded(make_app, token_files) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(make_app(auth_tokens_file=token_files[0])) as client:
        yield client


@pytest.fixture
async def admin(make_app, token_files) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """A client of an app on which every token may do everything, made on first use."""
    made: list[httpx.AsyncClient] = []

    def get() -> httpx.AsyncClient:
        if not made:
            made.append(http_client(make_app(auth_tokens_file=token_files[1])))
        return made[0]

    yield get
    for client in made:
        await client.aclose()


@contextlib.contextmanager
def acting_as(client: httpx.AsyncClient, headers: dict[str, str]) -> Iterator[httpx.AsyncClient]:
    """`client` sending `headers` with every request inside the block."""
    saved = httpx.Headers(client.headers)
    client.headers.update(headers)
    try:
        yield client
    finally:
        client.headers = saved


async def stock(
    client: httpx.AsyncClient,
    redis: Any,
    owner: dict[str, str],
    session_maker: httpx.AsyncClient | None = None,
    buckets: tuple[str, ...] = ("b",),
) -> Scene:
    """Key k in every one of `buckets`, uploaded with the star token; with `session_maker`, also a
    session in bucket b that `owner` (else "star") created through it."""
    scene = Scene(session_maker or client, redis, owner or bearer("star"))
    with acting_as(client, bearer("star")):
        for bucket in buckets:
            await upload(client, bucket, "k", CONTENT)
    if session_maker is not None:
        with acting_as(session_maker, scene.owner):
            scene.session_id = await start_session(session_maker, "b", "session-key", SESSION_SIZE)
    return scene


def assert_refused(response: httpx.Response, status: int) -> None:
    """A JSON error with `status` (the answer to a HEAD has headers only)."""
    if response.request.method != "HEAD":
        assert_error(response, status)
        return
    assert response.status_code == status, response.headers
    assert response.headers["content-type"].startswith("application/json")


def assert_unauthenticated(response: httpx.Response) -> None:
    assert_refused(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


# --- every action, every caller ----------------------------------------------------------------


@pytest.mark.parametrize("caller", CALLERS, ids=ids(CALLERS))
@pytest.mark.parametrize("action", ACTIONS, ids=ids(ACTIONS))
async def test_every_caller_of_every_action(guarded, admin, redis, action: Action, caller: Caller):
    owner = caller.headers(action.right) if caller.outcome != UNAUTHENTICATED else {}
    scene = await stock(guarded, redis, owner, admin() if action.session else None)
    before = await action.observe(scene)

    response = await action.call(guarded, scene, caller.headers(action.right))

    after = await action.observe(scene)
    if caller.outcome == UNAUTHENTICATED:
        assert_unauthenticated(response)
    elif caller.outcome == FORBIDDEN and action.forbidden_status == 403:
        assert_refused(response, 403)
    else:
        assert response.status_code == action.status, response.text
        if action.body is not None:
            assert response.content == action.body
    done = response.status_code == action.status
    assert (after != before) == (done and action.observe is not unchanged), (before, after)


@pytest.mark.parametrize(
    ("token", "visible"),
    [
        ("read-b", ["b"]),
        ("no-read-b", []),
        ("other-only", ["other"]),
        ("star", ["b", "other"]),
    ],
)
async def test_list_buckets_shows_only_the_buckets_the_token_may_read(guarded, redis, token, visible):
    await stock(guarded, redis, {}, buckets=("b", "other"))
    response = await guarded.get("/v1/files", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert [bucket["name"] for bucket in response.json()["data"]] == visible


async def test_the_contracts_example_grants_add_up(make_app, tmp_path, guarded, redis):
    """{"images": ["read", "write"], "*": ["read"]}: read everywhere, write only in images."""
    path = write_token_file(tmp_path / "example.json", {"star": {"images": ["read", "write"], "*": ["read"]}})
    await stock(guarded, redis, {})
    async with http_client(make_app(auth_tokens_file=path)) as client:
        client.headers.update(bearer("star"))
        assert (await client.get("/v1/files/b/k:content")).content == CONTENT
        assert (await upload(client, "images", "cat.png", b"png", "image/png"))["bytes"] == 3
        assert_error(
            await client.post("/v1/files", json={"bucket": "b", "key": "x", "mime_type": "a/b", "size": 1}), 403
        )
        assert_error(await client.delete("/v1/files/images/cat.png"), 403)


async def test_the_scheme_is_case_insensitive(guarded):
    response = await guarded.get("/v1/files", headers={"Authorization": f"bearer {SECRET['star']}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        json.dumps({"bucket": "b", "key": "k", "mime_type": "a/b", "size": 1, "pad": "x" * 70000}).encode(),
    ],
    ids=["bad-json", "wrong-fields", "over-the-json-limit"],
)
async def test_a_caller_without_a_token_is_told_401_whatever_its_body(guarded, redis, body):
    assert_unauthenticated(await guarded.post("/v1/files", content=body))
    assert await redis.keys("*session:*") == []


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
async def test_health_and_the_api_description_need_no_token(guarded, path):
    response = await guarded.get(path)
    assert response.status_code == 200, response.text


async def test_metrics_need_a_valid_token(guarded):
    assert_unauthenticated(await guarded.get("/metrics"))
    assert (await guarded.get("/metrics", headers=bearer("read-b"))).status_code == 200


# --- what a token may do: GET /v1/token --------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "buckets"),
    [
        ("no-write-b", {"b": ["read", "delete"]}),
        ("star", {"*": ["read", "write", "delete"]}),
    ],
)
async def test_a_token_is_told_its_name_and_grants(guarded, token, buckets):
    response = await guarded.get("/v1/token", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {"name": token, "open": False, "buckets": buckets}


async def test_the_token_route_needs_a_valid_token(guarded):
    assert_unauthenticated(await guarded.get("/v1/token"))
    assert_unauthenticated(await guarded.get("/v1/token", headers={"Authorization": "Bearer nobody"}))


async def test_an_open_service_tells_everyone_it_may_do_everything(client):
    response = await client.get("/v1/token")
    assert response.status_code == 200, response.text
    assert response.json() == {"name": None, "open": True, "buckets": {"*": ["read", "write", "delete"]}}


# --- sessions belong to their creator ----------------------------------------------------------

SESSION_ACTIONS = [action for action in ACTIONS if action.session]


@pytest.mark.parametrize("intruder", ["star", "no-delete-b", "other-only"])
@pytest.mark.parametrize("action", SESSION_ACTIONS, ids=ids(SESSION_ACTIONS))
async def test_a_session_is_invisible_to_every_other_token(guarded, admin, redis, action, intruder):
    owner = "write-b" if intruder == "no-delete-b" else "no-delete-b"
    scene = await stock(guarded, redis, bearer(owner), admin())
    assert_error(await action.call(guarded, scene, bearer(intruder)), 404)
    assert await scene.offset() == 0  # the owner's session is still there, untouched


# --- a token is only ever a hash -------------------------------------------------------------


async def test_a_token_file_holding_the_plain_token_authorises_nothing(make_app, tmp_path):
    """The file's `sha256` is compared with the hash of the presented token, never with the token."""
    token = hashlib.sha256(b"looks like a hash").hexdigest()
    entry = {"name": "plain", "sha256": token, "buckets": {"*": ALL}}
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    async with http_client(make_app(auth_tokens_file=path)) as client:
        assert_unauthenticated(await client.get("/v1/files", headers={"Authorization": f"Bearer {token}"}))


async def test_a_hash_in_upper_case_hex_works(make_app, tmp_path):
    """As PowerShell's Get-FileHash and some other tools write a SHA-256."""
    token = "an upper-case token"
    entry = {"name": "upper", "sha256": hashlib.sha256(token.encode()).hexdigest().upper(), "buckets": {"*": ALL}}
    path = tmp_path / "upper.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    async with http_client(make_app(auth_tokens_file=path)) as client:
        assert (await client.get("/v1/files", headers={"Authorization": f"Bearer {token}"})).status_code == 200


def test_token_new_prints_a_token_and_an_entry_of_its_hash(tmp_path):
    result = run_cli("token", "new", "ci-uploader")
    assert result.returncode == 0, result.stderr
    token, entry = parse_token_output(result.stdout)
    assert entry["name"] == "ci-uploader"
    assert entry["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(entry)


def parse_token_output(stdout: str) -> tuple[str, dict[str, Any]]:
    first, _, rest = stdout.partition("\n")
    assert first.startswith("token: "), stdout
    token = first.removeprefix("token: ").strip()
    assert len(token) >= 32, token
    return token, json.loads(rest[rest.index("{") :])


async def test_the_printed_entry_pasted_in_a_file_authorises_the_token(make_app, tmp_path):
    token, entry = parse_token_output(run_cli("token", "new", "pasted").stdout)
    path = tmp_path / "pasted.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    async with http_client(make_app(auth_tokens_file=path)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert (await upload(client, "b", "k", CONTENT))["bytes"] == len(CONTENT)
        assert (await client.get("/v1/files/b/k:content")).content == CONTENT
        assert_unauthenticated(await client.get("/v1/files/b", headers={"Authorization": f"Bearer {token}x"}))


# --- open mode ---------------------------------------------------------------------------------


async def test_open_mode_warns_at_start(make_app, caplog):
    app = make_app()
    with caplog.at_level(logging.WARNING):
        async with app.router.lifespan_context(app):
            pass
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert any("FILES_AUTH_TOKENS_FILE" in record.getMessage() for record in warnings), caplog.text


async def test_no_open_mode_warning_with_a_token_file(make_app, token_files, caplog):
    app = make_app(auth_tokens_file=token_files[0])
    with caplog.at_level(logging.WARNING):
        async with app.router.lifespan_context(app):
            pass
    assert "FILES_AUTH_TOKENS_FILE" not in caplog.text


@pytest.mark.parametrize("action", ACTIONS, ids=ids(ACTIONS))
async def test_open_mode_allows_every_action_without_a_token(client, redis, action):
    scene = await stock(client, redis, {}, client if action.session else None)
    response = await action.call(client, scene, {})
    assert response.status_code == action.status, response.text


# --- invalid token files stop the service before it serves -------------------------------------

VALID_ENTRY = {"name": "x", "sha256": "0" * 64, "buckets": {"b": ["read"]}}


def token_file_text(**entry_changes: Any) -> str:
    return json.dumps({"tokens": [{**VALID_ENTRY, **entry_changes}]})


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ('{"tokens": [', "JSON"),
        ('{"tokens": {"name": "x"}}', "tokens"),
        (json.dumps([VALID_ENTRY]), "object"),
        (json.dumps({"tokens": [{"name": "x", "buckets": {}}]}), "sha256"),
        (token_file_text(sha256="not hex"), "sha256"),
        (token_file_text(buckets={"no such bucket!": ["read"]}), "no such bucket!"),
        (token_file_text(buckets={"b": ["read", "admin"]}), "admin"),
        (None, "cannot be read"),
    ],
    ids=[
        "bad-json",
        "tokens-not-a-list",
        "not-an-object",
        "no-sha256",
        "bad-sha256",
        "bad-bucket",
        "unknown-action",
        "missing",
    ],
)
def test_an_invalid_token_file_stops_serve_with_status_2(tmp_path, text, hint):
    path = tmp_path / "tokens.json"
    if text is not None:
        path.write_text(text)
    result = run_cli(
        "serve", "--port", "0", env={"FILES_AUTH_TOKENS_FILE": str(path), "FILES_DATA_DIR": str(tmp_path / "data")}
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "FILES_AUTH_TOKENS_FILE" in result.stderr and hint in result.stderr, result.stderr
    assert "Uvicorn running" not in result.stdout + result.stderr
