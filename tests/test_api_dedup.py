"""Uploads that need no bytes: a session whose blake3 digest names content stored already completes at once.

Only content stored in a bucket the caller may read counts. For anyone else the session is an
ordinary one, answered exactly as for content stored nowhere, after the same Redis commands: a
second token learns nothing of the first token's files by guessing digests.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from apihelpers import assert_error, b3, blob_files, blob_path, content_url, download, send, start, sweep, upload
from conftest import http_client, on_both_redises
from redisrecording import record_round_trips
from starlette.applications import Starlette

from service.core.auth import new_token
from service.redis.keyspace import KeySpace

pytestmark = [pytest.mark.anyio, on_both_redises]

CONTENT = b"content the service holds already, " * 100
SECRET = b"the first token's content, which the second may not read " * 100
NOWHERE = SECRET[::-1]  # as long as SECRET: the sizes in the answers are the same


def digest_of(content: bytes) -> str:
    return f"blake3:{b3(content)}"


async def test_a_digest_of_stored_content_completes_the_session_at_once(app, client, settings):
    await upload(client, "a", "first", CONTENT)
    blobs = blob_files(settings.data_dir)

    response = await start(client, "b", "second", len(CONTENT), "text/plain", digest=digest_of(CONTENT))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "bucket": "b",
        "key": "second",
        "mime_type": "text/plain",
        "url": content_url("b", "second"),
        "bytes": len(CONTENT),
        "created_at": body["created_at"],
        "digest": digest_of(CONTENT),
        "metadata": {},
        "id": body["id"],
        "offset": len(CONTENT),
        "size": len(CONTENT),
        "deduplicated": True,
    }
    session = await client.get(f"/v1/files/session:{body['id']}")
    assert session.json()["offset"] == len(CONTENT)
    assert_error(await send(client, body["id"], b"x"), 409)  # completed: no byte is taken
    assert (await download(client, "b", "second")).content == CONTENT
    assert blob_files(settings.data_dir) == blobs == [blob_path(settings.data_dir, b3(CONTENT))]
    # The new file counts as a reference: deleting the first keeps the content.
    assert (await client.delete("/v1/files/a/first")).status_code == 200
    await sweep(app)
    assert (await download(client, "b", "second")).content == CONTENT


async def test_only_a_blake3_digest_of_the_same_size_completes_at_once(client):
    await upload(client, "a", "first", CONTENT)
    sha256 = await start(client, "b", "k", len(CONTENT), digest="sha256:" + "0" * 64)
    assert sha256.json().keys() == {"id", "url", "offset", "size"}
    # Another size cannot be this content: an ordinary session, and the digest is checked at the end.
    shorter = await start(client, "b", "k", len(CONTENT) - 1, digest=digest_of(CONTENT))
    assert shorter.json().keys() == {"id", "url", "offset", "size"}
    assert_error(await send(client, shorter.json()["id"], CONTENT[:-1]), 422)


async def test_a_zero_size_session_completes_as_before(client):
    body = (await start(client, "b", "empty", 0, digest=digest_of(b""))).json()
    assert body["deduplicated"] is False and body["offset"] == body["size"] == body["bytes"] == 0


async def test_content_whose_blob_is_gone_needs_its_bytes(client, settings, redis):
    await upload(client, "a", "first", CONTENT)
    blob_path(settings.data_dir, b3(CONTENT)).unlink()  # lost behind the index's back
    response = await start(client, "b", "second", len(CONTENT), digest=digest_of(CONTENT))
    assert response.json().keys() == {"id", "url", "offset", "size"}
    assert not await redis.hlen(KeySpace(settings.redis_prefix).intents("b"))  # the link changed nothing
    assert not await redis.exists(KeySpace(settings.redis_prefix).refs(b3(CONTENT), "b")), "nor claimed the content"
    completed = await send(client, response.json()["id"], CONTENT, offset=0)
    assert completed.status_code == 200 and completed.json()["digest"] == digest_of(CONTENT)
    assert (await download(client, "b", "second")).content == CONTENT


async def test_after_redis_loses_the_index_a_stored_digest_still_completes_at_once(client, redis, settings):
    await upload(client, "a", "first", CONTENT)
    await redis.delete(*[key async for key in redis.scan_iter(match=f"{settings.redis_prefix}index:*")])
    response = await start(client, "b", "second", len(CONTENT), digest=digest_of(CONTENT))
    assert response.json()["deduplicated"] is True


# --- tokens: content a token may not read is never revealed ----------------------------------------

GRANTS = {
    "first": {"first-bucket": ["read", "write", "delete"]},
    "second": {"second-bucket": ["read", "write"]},
    "reader": {"*": ["read"], "third-bucket": ["write"]},
}
TOKENS = {name: new_token(name, grants) for name, grants in GRANTS.items()}  # type: ignore[arg-type]


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry for _, entry in TOKENS.values()]}))
    return path


def as_token(app: Starlette, name: str) -> httpx.AsyncClient:
    client = http_client(app)
    client.headers["Authorization"] = f"Bearer {TOKENS[name][0]}"
    return client


class CommandLog:
    """The commands one Redis client sends (for a script: which one, and how many keys and arguments)."""

    def __init__(self, client: Any) -> None:
        self.commands: list[tuple] = []
        self.recording = False
        record_round_trips(client, lambda trip: [self.record(command) for command in trip])

    def record(self, args: tuple) -> None:
        if self.recording:
            name = str(args[0]).upper()
            script = name in ("EVALSHA", "EVAL")
            self.commands.append((name, args[1], args[2], len(args)) if script else (name, len(args)))

    async def during(self, request: Callable[[], Awaitable[httpx.Response]]) -> tuple[httpx.Response, list[tuple]]:
        self.commands, self.recording = [], True
        try:
            return await request(), self.commands
        finally:
            self.recording = False


def shape(response: httpx.Response) -> tuple:
    """What an answer tells, but for the new session's own id."""
    body = response.json()
    return (
        response.status_code,
        sorted(response.headers.keys()),
        response.headers["upload-offset"],
        sorted(body),
        body["url"].replace(body["id"], "<id>"),
        body["offset"],
        body["size"],
    )


async def test_a_second_token_learns_nothing_of_the_first_tokens_content(make_app, tokens_file, settings):
    app = make_app(auth_tokens_file=tokens_file)
    log = CommandLog(app.state.services.client)
    async with as_token(app, "first") as first, as_token(app, "second") as second:
        await upload(first, "first-bucket", "secret", SECRET)
        await start(second, "second-bucket", "warm-up", 10, digest=digest_of(b"warms the scripts up"))

        def create(content: bytes, key: str) -> Callable[[], Awaitable[httpx.Response]]:
            return lambda: start(second, "second-bucket", key, len(content), digest=digest_of(content))

        unreadable, unreadable_commands = await log.during(create(SECRET, "guess"))
        nowhere, nowhere_commands = await log.during(create(NOWHERE, "other"))

        # The same answer as for content stored nowhere: an ordinary session, no file.
        assert (
            shape(unreadable)
            == shape(nowhere)
            == (
                200,
                ["content-length", "content-type", "upload-offset", "x-request-id"],
                "0",
                ["id", "offset", "size", "url"],
                "http://files.test/v1/files/session:<id>",
                0,
                len(SECRET),
            )
        )
        # After the same Redis work: the same commands with as many keys and arguments, nothing else (the
        # session's record and admission; whether the index is complete; whether the readable buckets hold
        # the digest).
        assert unreadable_commands == nowhere_commands
        assert [command[0] for command in unreadable_commands] == ["HSET", "EXPIRE", "EVAL", "EXISTS", "SMISMEMBER"]
        assert_error(await second.get("/v1/files/second-bucket/guess"), 404)

        # The bytes must come; the upload then works as any other, and the content is stored once.
        session_id = unreadable.json()["id"]
        assert (await second.get(f"/v1/files/session:{session_id}")).json()["offset"] == 0
        completed = await send(second, session_id, SECRET, offset=0)
        assert completed.status_code == 200, completed.text
        assert completed.json()["digest"] == digest_of(SECRET) and "deduplicated" not in completed.json()
        assert blob_files(settings.data_dir) == [blob_path(settings.data_dir, b3(SECRET))]

        # Now the second token holds the content itself: from then on it needs no bytes.
        again = await start(second, "second-bucket", "again", len(SECRET), digest=digest_of(SECRET))
        assert again.json()["deduplicated"] is True
        assert (await download(second, "second-bucket", "again")).content == SECRET


async def test_a_token_that_may_read_every_bucket_finds_content_in_any(make_app, tokens_file):
    app = make_app(auth_tokens_file=tokens_file)
    async with as_token(app, "first") as first, as_token(app, "reader") as reader:
        await upload(first, "first-bucket", "secret", SECRET)
        response = await start(reader, "third-bucket", "copy", len(SECRET), digest=digest_of(SECRET))
        assert response.json()["deduplicated"] is True
        # Write in a bucket is still needed, dedup or not.
        assert_error(await start(reader, "first-bucket", "x", len(SECRET), digest=digest_of(SECRET)), 403)
