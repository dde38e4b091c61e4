"""Upload sessions through HTTP: creating them, sending chunks, completing, cancelling, and their Redis state."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from apihelpers import (
    assert_error,
    b3,
    blob_files,
    blob_path,
    content_url,
    download,
    entry_files,
    partial_files,
    partial_path,
    send,
    session_path,
    start,
    start_session,
    stream,
    sweep,
    upload,
)
from conftest import BASE_URL, http_client

from service.core.errors import StorageFull
from service.redis.keyspace import KeySpace

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
VALID = {"bucket": "b", "key": "k", "mime_type": "application/octet-stream", "size": 10}


class BrokenBody(Exception):
    """Raised by a request body part way through: the connection broke off."""


async def assert_refused(client: httpx.AsyncClient, redis, payload: object, status: int = 400) -> None:
    """POST /v1/files with `payload` is refused with `status`, and nothing was stored for it."""
    assert_error(await client.post("/v1/files", json=payload), status)
    assert await redis.keys("*session:*") == []


def changed(**fields: object) -> dict[str, object]:
    return {**VALID, **fields}


async def held_body(first: bytes, rest: bytes, started: anyio.Event, release: anyio.Event) -> AsyncIterator[bytes]:
    """A body that sends `first`, signals `started`, and sends `rest` only once `release` is set."""
    yield first
    started.set()
    await release.wait()
    yield rest


async def broken_body(part: bytes) -> AsyncIterator[bytes]:
    yield part
    raise BrokenBody("the connection broke off")


# --- POST /v1/files --------------------------------------------------------------------------


async def test_create_returns_a_session_at_offset_zero(client):
    response = await start(client, "b", "dir/k.bin", 10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["id"], str) and body["id"]
    assert body["url"] == f"{BASE_URL}/v1/files/session:{body['id']}"
    assert (body["offset"], body["size"]) == (0, 10)


async def test_every_session_gets_its_own_id(client):
    ids = {await start_session(client, "b", "k", 10) for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"not json", b"\xff\xfe{}", b"[]", b'"text"', b"null", b"42", b'{"bucket": "b",}']
)
async def test_create_refuses_a_body_that_is_not_a_json_object(client, redis, raw):
    response = await client.post("/v1/files", content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400)
    assert await redis.keys("*session:*") == []


@pytest.mark.parametrize("field", ["bucket", "key", "mime_type", "size"])
async def test_create_refuses_a_missing_field(client, redis, field):
    payload = {name: value for name, value in VALID.items() if name != field}
    await assert_refused(client, redis, payload)


@pytest.mark.parametrize(
    "field, value",
    [
        ("size", "10"),
        ("size", True),
        ("size", 1.5),
        ("size", None),
        ("size", [10]),
        ("size", -1),
        ("bucket", 7),
        ("bucket", None),
        ("key", ["k"]),
        ("key", {"k": 1}),
        ("mime_type", None),
        ("mime_type", 1),
        ("digest", 5),
    ],
)
async def test_create_refuses_a_field_of_the_wrong_type_or_value(client, redis, field, value):
    await assert_refused(client, redis, changed(**{field: value}))


@pytest.mark.parametrize("bucket", ["", "b" * 64, "a.b", "a/b", "a b", "a:b", "bücket", "b\n", "b*", "ā"], ids=repr)
async def test_create_refuses_a_bad_bucket(client, redis, bucket):
    await assert_refused(client, redis, changed(bucket=bucket))


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/a",
        "/",
        "a//b",
        ".",
        "..",
        "./a",
        "a/./b",
        "a/../b",
        "a/..",
        "a/",
        "a/b/",
        "k" * 1025,
        "ké",
        "a b",
        "a:b",
        "a\\b",
        "a?b",
        "a%2Fb",
        "a\n",
        "\u2024",
    ],
    ids=repr,
)
async def test_create_refuses_a_bad_key(client, redis, key):
    await assert_refused(client, redis, changed(key=key))


@pytest.mark.parametrize(
    "mime_type",
    ["", "text", "text/", "/plain", "text/plain/x", "text plain", "tëxt/plain", "text/plain; charset", "text/pl ain"],
    ids=repr,
)
async def test_create_refuses_a_bad_mime_type(client, redis, mime_type):
    await assert_refused(client, redis, changed(mime_type=mime_type))


@pytest.mark.parametrize(
    "digest",
    ["", "blake3:", "blake3:" + "0" * 63, "blake3:" + "0" * 65, "blake3:" + "g" * 64, "md5:" + "0" * 64, "0" * 64],
    ids=repr,
)
async def test_create_refuses_a_malformed_digest(client, redis, digest):
    await assert_refused(client, redis, changed(digest=digest))


@pytest.mark.parametrize(
    "fields",
    [
        {"bucket": "b" * 63},
        {"bucket": "A-z_09"},
        {"key": "k" * 1024},
        {"key": ".hidden"},
        {"key": "a/.../b"},
        {"key": "..a/b..", "bucket": "x"},
        {"key": "A-Z_a.z/0-9"},
        {"mime_type": "text/plain; charset=utf-8"},
        {"mime_type": "application/vnd.api+json"},
    ],
    ids=repr,
)
async def test_names_at_the_edge_of_the_rules_work_all_the_way(client, fields):
    payload = changed(**fields, size=1)
    response = await client.post("/v1/files", json=payload)
    assert response.status_code == 200, response.text
    assert (await send(client, response.json()["id"], b"x")).status_code == 200
    path = f"/v1/files/{payload['bucket']}/{payload['key']}"
    assert (await client.get(path)).json()["key"] == payload["key"]
    got = await client.get(f"{path}:content")
    assert got.content == b"x" and got.headers["content-type"] == payload["mime_type"]
    assert [file["key"] for file in (await client.get(f"/v1/files/{payload['bucket']}")).json()["data"]] == [
        payload["key"]
    ]
    assert (await client.delete(path)).status_code == 200


async def test_a_bad_name_is_refused_even_with_the_other_fields_fine(client, redis, settings):
    await assert_refused(client, redis, changed(key="a//b", size=0))
    assert partial_files(settings.data_dir) == [] and blob_files(settings.data_dir) == []
    assert (await client.get("/v1/files")).json()["data"] == []


async def test_create_refuses_a_size_over_the_limit(make_app, redis):
    async with http_client(make_app(max_upload_bytes=100)) as client:
        await assert_refused(client, redis, changed(size=101), status=413)
        response = await start(client, "b", "k", 100)
        assert response.status_code == 200, response.text


async def test_a_chunk_cannot_carry_a_session_over_the_limit_either(make_app, redis):
    async with http_client(make_app(max_upload_bytes=100)) as client:
        session_id = await start_session(client, "b", "k", 100)
        assert_error(await send(client, session_id, b"x" * 101), 413)
        assert (await client.get(session_path(session_id))).json()["offset"] == 0


# --- digests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["blake3", "sha256", "SHA256-upper-hex"])
@pytest.mark.parametrize("chunk", [None, 7], ids=["whole", "chunked"])
async def test_a_matching_digest_completes_the_upload(client, algorithm, chunk):
    content = os.urandom(20)
    if algorithm == "blake3":
        digest = "blake3:" + b3(content)
    else:
        hexdigest = hashlib.sha256(content).hexdigest()
        digest = "sha256:" + (hexdigest.upper() if algorithm.endswith("upper-hex") else hexdigest)
    file = await upload(client, "b", "k", content, chunk=chunk, digest=digest)
    assert file["digest"] == "blake3:" + b3(content)
    assert (await download(client, "b", "k")).content == content


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
@pytest.mark.parametrize("chunk", [None, 7], ids=["whole", "chunked"])
async def test_a_digest_mismatch_is_422_and_discards_the_session(client, settings, algorithm, chunk):
    content = os.urandom(20)
    session_id = await start_session(client, "b", "k", len(content), digest=f"{algorithm}:" + "ab" * 32)
    step = chunk or len(content)
    parts = [content[first : first + step] for first in range(0, len(content), step)]
    for part in parts[:-1]:
        assert (await send(client, session_id, part)).status_code == 200
    assert_error(await send(client, session_id, parts[-1]), 422)
    assert_error(await client.get(session_path(session_id)), 404)
    assert_error(await send(client, session_id, b""), 404)
    assert_error(await client.get("/v1/files/b/k"), 404)
    assert_error(await download(client, "b", "k"), 404)
    assert (await client.get("/v1/files/b")).json()["data"] == []
    assert (await client.get("/v1/files")).json()["data"] == []
    assert blob_files(settings.data_dir) == []
    assert not partial_path(settings.data_dir, session_id).exists()


async def test_a_digest_mismatch_does_not_touch_an_older_file_of_the_key(client):
    old = await upload(client, "b", "k", b"old content")
    session_id = await start_session(client, "b", "k", 3, digest="blake3:" + b3(b"abd"))
    assert_error(await send(client, session_id, b"abc"), 422)
    assert (await client.get("/v1/files/b/k")).json() == old
    assert (await download(client, "b", "k")).content == b"old content"


# --- size 0 ----------------------------------------------------------------------------------


async def test_a_session_of_size_zero_completes_at_once(client, settings):
    response = await start(client, "b", "empty.txt", 0, "text/plain")
    assert response.status_code == 200, response.text
    info = await client.get("/v1/files/b/empty.txt")
    assert info.status_code == 200, info.text
    assert info.json()["bytes"] == 0
    assert info.json()["digest"] == "blake3:" + b3(b"")
    content = await download(client, "b", "empty.txt")
    assert content.status_code == 200 and content.content == b""
    assert content.headers["content-length"] == "0"
    assert blob_path(settings.data_dir, b3(b"")).is_file()
    session = await client.get(session_path(response.json()["id"]))
    assert session.status_code == 200 and session.json()["offset"] == session.json()["size"] == 0


async def test_a_session_of_size_zero_with_a_wrong_digest_is_422(client):
    assert_error(await start(client, "b", "k", 0, digest="blake3:" + b3(b"x")), 422)
    assert_error(await client.get("/v1/files/b/k"), 404)


# --- POST /v1/files/session:<id> -------------------------------------------------------------


async def test_chunks_without_upload_offset_append_at_the_current_offset(client):
    content = os.urandom(30)
    session_id = await start_session(client, "b", "k", len(content))
    for first in (0, 10):
        response = await send(client, session_id, content[first : first + 10])
        assert response.status_code == 200 and response.json()["offset"] == first + 10
    done = await send(client, session_id, content[20:])
    assert done.status_code == 200 and done.json()["bytes"] == 30
    assert (await download(client, "b", "k")).content == content


async def test_a_chunk_returns_the_session_with_its_offset_advanced(client):
    session_id = await start_session(client, "b", "k", 10)
    response = await send(client, session_id, b"abcd", offset=0)
    assert response.status_code == 200
    assert response.json() == {
        **response.json(),
        "id": session_id,
        "url": f"{BASE_URL}{session_path(session_id)}",
        "offset": 4,
        "size": 10,
    }
    assert (await client.get(session_path(session_id))).json()["offset"] == 4


async def test_a_session_whose_partial_data_was_lost_starts_again_at_0(client, settings):
    session_id = await start_session(client, "b", "k", 10)
    assert (await send(client, session_id, b"abcd")).status_code == 200
    partial_path(settings.data_dir, session_id).unlink()
    body = assert_error(await send(client, session_id, b"efghij", offset=4), 409)
    assert (body["code"], body["offset"]) == ("offset_mismatch", 0) and "lost" in body["detail"]
    assert (await client.get(session_path(session_id))).json()["offset"] == 0
    assert (await send(client, session_id, b"abcdefghij", offset=0)).status_code == 200
    assert (await download(client, "b", "k")).content == b"abcdefghij"


@pytest.mark.parametrize("wrong", [0, 3, 5, 10, 11])
async def test_a_mismatching_upload_offset_is_409_with_the_current_offset(client, settings, wrong):
    session_id = await start_session(client, "b", "k", 10)
    assert (await send(client, session_id, b"abcd")).status_code == 200
    body = assert_error(await send(client, session_id, b"XYZ", offset=wrong), 409)
    assert body["offset"] == 4
    assert (await client.get(session_path(session_id))).json()["offset"] == 4
    assert partial_path(settings.data_dir, session_id).stat().st_size == 4
    assert (await send(client, session_id, b"efghij", offset=4)).status_code == 200
    assert (await download(client, "b", "k")).content == b"abcdefghij"


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
async def test_a_chunk_past_the_size_is_413_and_nothing_of_it_is_kept(client, settings, transfer):
    content = os.urandom(2 * MiB + 100)
    session_id = await start_session(client, "b", "k", len(content))
    assert (await send(client, session_id, content[:100])).status_code == 200
    too_much = content[100:] + b"!"
    body = (
        too_much
        if transfer == "content-length"
        else stream(*(too_much[i : i + MiB // 2] for i in range(0, len(too_much), MiB // 2)))
    )
    assert_error(await send(client, session_id, body), 413)
    assert (await client.get(session_path(session_id))).json()["offset"] == 100
    assert partial_path(settings.data_dir, session_id).stat().st_size == 100
    done = await send(client, session_id, content[100:], offset=100)
    assert done.status_code == 200, done.text
    assert (await download(client, "b", "k")).content == content


async def test_the_request_content_type_is_ignored(client):
    content = b"name=value&other=%20x"
    session_id = await start_session(client, "b", "form.txt", len(content), mime_type="text/plain")
    response = await send(client, session_id, content, **{"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    assert (await download(client, "b", "form.txt")).content == content


async def test_a_chunked_transfer_is_accepted(client):
    content = os.urandom(3 * MiB + 17)
    session_id = await start_session(client, "b", "k", len(content))
    parts = [content[i : i + 300_000] for i in range(0, len(content), 300_000)]
    response = await send(client, session_id, stream(*parts))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 200, response.text
    assert response.json()["bytes"] == len(content)
    assert (await download(client, "b", "k")).content == content


async def test_the_completing_chunk_returns_the_file(client, settings):
    content = b"hello, world"
    before = int(time.time())
    session_id = await start_session(client, "docs", "a/b/hello.txt", len(content), mime_type="text/plain")
    response = await send(client, session_id, content, offset=0)
    assert response.status_code == 200, response.text
    file = response.json()
    assert {key: file[key] for key in ("bucket", "key", "mime_type", "url", "bytes", "digest")} == {
        "bucket": "docs",
        "key": "a/b/hello.txt",
        "mime_type": "text/plain",
        "url": content_url("docs", "a/b/hello.txt"),
        "bytes": len(content),
        "digest": "blake3:" + b3(content),
    }
    assert type(file["created_at"]) is int and before <= file["created_at"] <= time.time() + 1
    assert (await client.get("/v1/files/docs/a/b/hello.txt")).json() == file
    assert not partial_path(settings.data_dir, session_id).exists()
    assert blob_path(settings.data_dir, file["digest"]).read_bytes() == content
    assert len(entry_files(settings.data_dir)) == 1


async def test_a_completed_session_refuses_more_content_but_still_answers(client):
    session_id = await start_session(client, "b", "k", 3)
    assert (await send(client, session_id, b"abc")).status_code == 200
    assert_error(await send(client, session_id, b"d"), 409)
    assert_error(await send(client, session_id, b""), 409)
    info = await client.get(session_path(session_id))
    assert info.status_code == 200 and info.json()["offset"] == info.json()["size"] == 3
    assert (await download(client, "b", "k")).content == b"abc"


@pytest.mark.parametrize("session_id", ["0" * 32, "f" * 32, "nothex", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "00-11"])
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_an_unknown_or_malformed_session_is_404(client, method, session_id):
    response = await client.request(method, session_path(session_id), content=b"x" if method == "POST" else None)
    assert_error(response, 404)


async def test_an_expired_session_is_404(client, redis):
    session_id = await start_session(client, "b", "k", 10)
    assert (await send(client, session_id, b"abc")).status_code == 200
    await redis.delete(KeySpace("files:").session(session_id))  # what an expiry leaves
    assert_error(await client.get(session_path(session_id)), 404)
    assert_error(await send(client, session_id, b"defg"), 404)


async def test_the_sweep_removes_the_partial_data_of_expired_sessions_only(app, client, redis, settings):
    expiring = await start_session(client, "b", "k", 10)
    alive = await start_session(client, "b", "k2", 10)
    for session_id in (expiring, alive):
        assert (await send(client, session_id, b"abc")).status_code == 200
    await redis.pexpire(KeySpace("files:").session(expiring), 1)
    with anyio.fail_after(5):
        while await redis.exists(KeySpace("files:").session(expiring)):
            await anyio.sleep(0.005)
    await sweep(app)  # what every process runs in the background
    assert not partial_path(settings.data_dir, expiring).exists()
    assert partial_path(settings.data_dir, alive).stat().st_size == 3
    assert_error(await client.get(session_path(expiring)), 404)
    assert (await send(client, alive, b"defghij", offset=3)).status_code == 200


# --- DELETE /v1/files/session:<id> -----------------------------------------------------------


async def test_cancelling_a_session_removes_it_and_its_partial_data(client, settings):
    session_id = await start_session(client, "b", "k", 10)
    assert (await send(client, session_id, b"abc")).status_code == 200
    assert partial_path(settings.data_dir, session_id).stat().st_size == 3
    response = await client.delete(session_path(session_id))
    assert response.status_code == 204 and response.content == b""
    assert not partial_path(settings.data_dir, session_id).exists()
    for method in ("GET", "POST", "DELETE"):
        assert_error(await client.request(method, session_path(session_id)), 404)
    assert_error(await client.get("/v1/files/b/k"), 404)


async def test_cancelling_a_completed_session_leaves_the_file(client):
    session_id = await start_session(client, "b", "k", 3)
    assert (await send(client, session_id, b"abc")).status_code == 200
    assert (await client.delete(session_path(session_id))).status_code == 204
    assert (await download(client, "b", "k")).content == b"abc"
    assert (await client.get("/v1/files/b/k")).status_code == 200


async def test_cancelling_one_session_leaves_another_of_the_same_key(client, settings):
    first = await start_session(client, "b", "k", 6)
    second = await start_session(client, "b", "k", 6)
    assert (await send(client, first, b"aaa")).status_code == 200
    assert (await send(client, second, b"bbb")).status_code == 200
    assert (await client.delete(session_path(first))).status_code == 204
    assert partial_path(settings.data_dir, second).stat().st_size == 3
    assert (await send(client, second, b"ccc", offset=3)).status_code == 200
    assert (await download(client, "b", "k")).content == b"bbbccc"


# --- replacing a key -------------------------------------------------------------------------


async def test_uploading_to_an_existing_key_replaces_it_and_frees_the_old_blob(app, client, settings):
    await sweep(app)  # what the process does at start
    old = await upload(client, "b", "k", b"old content", mime_type="text/plain")
    assert blob_path(settings.data_dir, old["digest"]).read_bytes() == b"old content"
    new = await upload(client, "b", "k", b"new content!", mime_type="application/json")
    assert new["digest"] == "blake3:" + b3(b"new content!")
    assert not blob_path(settings.data_dir, old["digest"]).exists()
    assert blob_files(settings.data_dir) == [blob_path(settings.data_dir, new["digest"])]
    assert (await client.get("/v1/files/b/k")).json() == new
    got = await download(client, "b", "k")
    assert got.content == b"new content!" and got.headers["content-type"] == "application/json"
    assert [file["key"] for file in (await client.get("/v1/files/b")).json()["data"]] == ["k"]


async def test_replacing_a_key_keeps_the_old_blob_while_another_key_uses_it(app, client, settings):
    old = await upload(client, "b", "k", b"shared")
    await upload(client, "other", "k2", b"shared")
    await upload(client, "b", "k", b"replacement")
    await sweep(app)
    assert blob_path(settings.data_dir, old["digest"]).read_bytes() == b"shared"
    assert (await download(client, "other", "k2")).content == b"shared"
    assert (await client.delete("/v1/files/other/k2")).status_code == 200
    await sweep(app)
    assert not blob_path(settings.data_dir, old["digest"]).exists()


async def test_replacing_a_key_with_the_same_content_keeps_its_blob(app, client, settings):
    first = await upload(client, "b", "k", b"same")
    await upload(client, "b", "k", b"same")
    await sweep(app)
    assert blob_files(settings.data_dir) == [blob_path(settings.data_dir, first["digest"])]
    assert (await download(client, "b", "k")).content == b"same"


# --- Redis: TTL and prefix -------------------------------------------------------------------


async def test_the_session_ttl_is_set_and_renewed_by_requests(make_app, redis):
    async with http_client(make_app(session_ttl_seconds=100)) as client:
        session_id = await start_session(client, "b", "k", 10)
        name = KeySpace("files:").session(session_id)
        assert 90 <= await redis.ttl(name) <= 100
        for request in (
            lambda: client.get(session_path(session_id)),
            lambda: send(client, session_id, b"abc"),
            lambda: send(client, session_id, b"def", offset=3),
        ):
            await redis.expire(name, 5)
            assert (await request()).status_code == 200
            assert 90 <= await redis.ttl(name) <= 100


async def written_keys(pubsub) -> set[str]:
    """The keys named by the keyspace notifications received so far (fakeredis sends them for every write)."""
    keys = set()
    while message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05):
        keys.add(message["channel"].split(":", 1)[1])
    return keys


async def test_every_redis_key_the_service_writes_starts_with_the_prefix(make_app, redis):
    pubsub = redis.pubsub()
    await pubsub.psubscribe("__keyspace@*__:*")
    with anyio.fail_after(5):
        while (await pubsub.get_message(timeout=1) or {}).get("type") != "psubscribe":
            pass
    app = make_app(redis_prefix="x:")
    async with http_client(app) as client:
        await sweep(app)
        await upload(client, "b", "k", b"content", chunk=3)
        await upload(client, "b", "k2", b"content")
        await upload(client, "c", "k", b"", mime_type="text/plain")
        await upload(client, "b", "k", b"replaced", digest="sha256:" + hashlib.sha256(b"replaced").hexdigest())
        await upload(client, "b", "streamed", b"abc" * 1000, chunk=1000)
        mismatch = await start_session(client, "b", "bad", 1, digest="blake3:" + b3(b"y"))
        assert_error(await send(client, mismatch, b"x"), 422)
        cancelled = await start_session(client, "b", "cancelled", 5)
        assert (await send(client, cancelled, b"ab")).status_code == 200
        assert (await client.delete(session_path(cancelled))).status_code == 204
        assert (await client.delete("/v1/files/b/k2")).status_code == 200
        await redis.delete(*await redis.keys("x:index:*"))  # the next listing rebuilds the index
        assert len((await client.get("/v1/files/b")).json()["data"]) == 2
        assert (await client.get("/v1/files")).json()["data"] == [{"name": "b"}, {"name": "c"}]
        assert (await client.get("/readyz")).status_code == 200
        await sweep(app)
    written = await written_keys(pubsub) | set(await redis.keys("*"))
    await pubsub.aclose()
    assert any(":session:" in key for key in written) and any("lock" in key for key in written), written
    assert sorted(key for key in written if not key.startswith("x:")) == []


@pytest.mark.parametrize("last_body", [1000, 3 * 1024 * 1024])
async def test_the_offset_when_the_commit_starts_spares_a_large_last_body_from_being_sent_again(
    make_app, monkeypatch, last_body
):
    """Should the process die during the commit (a long fsync), the client resumes from the session's
    offset: a large last body is recorded before the commit (only an empty request is left to send),
    a small one moves the offset only with the completion (one round trip less per small file)."""
    content = os.urandom(1000 + last_body)
    app = make_app()
    catalog = app.state.services.catalog
    seen = []
    real_commit = catalog.commit

    async def commit(entry, staged):
        seen.append((await app.state.services.sessions.get(session_id)).offset)
        await real_commit(entry, staged)

    monkeypatch.setattr(catalog, "commit", commit)
    async with http_client(app) as client:
        session_id = await start_session(client, "b", "k", len(content))
        assert (await send(client, session_id, content[:1000], offset=0)).status_code == 200
        done = await send(client, session_id, content[1000:], offset=1000)
        assert done.status_code == 200 and done.json()["digest"] == f"blake3:{b3(content)}"
    assert seen == [len(content) if last_body > 1024 * 1024 else 1000]


@pytest.mark.parametrize("size", [4096, 300 * 1024, 1024 * 1024], ids=["4k", "300k", "1m"])
async def test_a_small_upload_in_one_request_is_staged_only_when_its_commit_fails(
    make_app, monkeypatch, settings, size
):
    """A small body that is the whole upload goes to the blob store from memory, with no partial file;
    should its commit fail, it is staged then, so that the offset records it (507 at the size) and an
    empty request completes the upload. Every byte is in the file, whichever buffers held it."""
    content = os.urandom(size)
    app = make_app()
    services = app.state.services
    real_commit, real_open = services.catalog.commit, services.staging.open
    failures: list[Exception] = []
    staged = []

    async def commit(entry, source):
        if failures:
            raise failures.pop()
        await real_commit(entry, source)

    def open_staged(name, offset, read_back=False):
        staged.append((name, offset))
        return real_open(name, offset, read_back)

    monkeypatch.setattr(services.catalog, "commit", commit)
    monkeypatch.setattr(services.staging, "open", open_staged)
    async with http_client(app) as client:
        await upload(client, "b", "whole", content[:-1])
        assert staged == []
        assert (await download(client, "b", "whole")).content == content[:-1]
        session_id = await start_session(client, "b", "k", len(content))
        failures.append(StorageFull("no room for the entry"))
        refused = await send(client, session_id, content, offset=0)
        assert assert_error(refused, 507)["offset"] == len(content)
        assert staged == [(session_id, 0)] and partial_files(settings.data_dir) == [
            partial_path(settings.data_dir, session_id)
        ]
        done = await send(client, session_id, b"", offset=len(content))
        assert done.status_code == 200 and done.json()["digest"] == f"blake3:{b3(content)}"
        assert (await download(client, "b", "k")).content == content
    assert partial_files(settings.data_dir) == []


async def test_a_small_upload_whose_commit_fails_after_its_session_was_taken_over_leaves_the_new_writer_s_bytes(
    make_app, monkeypatch, redis, settings
):
    """A small body held in memory is staged only while its request still holds the session: once
    another request took the session over (the lease lost while the commit ran), staging it would
    overwrite the bytes that request wrote and was acknowledged for, and the file would not be the
    one the client sent."""
    content, other = os.urandom(4096), os.urandom(4096)
    app = make_app()
    services = app.state.services
    keys = KeySpace(settings.redis_prefix)

    async with http_client(app) as client:
        session_id = await start_session(client, "b", "k", len(content))

        async def commit(entry, source):
            await redis.delete(keys.lock(f"session:{session_id}"))  # the lease ran out meanwhile
            taken_over = await send(client, session_id, other[:1000], offset=0)
            assert taken_over.status_code == 200 and taken_over.json()["offset"] == 1000
            raise StorageFull("no room for the entry")

        monkeypatch.setattr(services.catalog, "commit", commit)
        refused = await send(client, session_id, content, offset=0)
        assert refused.status_code == 409, refused.text  # SessionBusy: the session is the other request's
        monkeypatch.undo()
        done = await send(client, session_id, other[1000:], offset=1000)
        assert done.status_code == 200, done.text
        assert (await download(client, "b", "k")).content == other


async def test_every_request_lets_go_of_the_locks_it_took(make_app, redis):
    """Locks end with the work: a whole upload, a chunked one, a replacement, a duplicate, a digest
    mismatch, a cancel and a delete each leave no lock behind in Redis (a long lease: none runs out)."""

    async def no_locks_left() -> None:
        assert await redis.keys("x:lock:*") == []

    app = make_app(redis_prefix="x:", lock_lease_seconds=30)
    async with http_client(app) as client:
        await upload(client, "b", "k", b"content")
        await no_locks_left()
        await upload(client, "b", "chunked", b"abcdefgh", chunk=3)
        await no_locks_left()
        await upload(client, "b", "k", b"replaced")
        await no_locks_left()
        await upload(client, "b", "same", b"replaced")
        await no_locks_left()
        mismatch = await start_session(client, "b", "bad", 1, digest="blake3:" + b3(b"y"))
        assert_error(await send(client, mismatch, b"x"), 422)
        await no_locks_left()
        cancelled = await start_session(client, "b", "cancelled", 5)
        assert (await send(client, cancelled, b"ab")).status_code == 200
        await no_locks_left()
        assert (await client.delete(session_path(cancelled))).status_code == 204
        assert (await client.delete("/v1/files/b/same")).status_code == 200
        await no_locks_left()


async def test_public_url_sets_the_base_of_every_url(make_app):
    base = "https://files.example.com"
    async with http_client(make_app(public_url=base)) as client:
        created = await start(client, "b", "k", 3)
        assert created.json()["url"] == f"{base}/v1/files/session:{created.json()['id']}"
        done = await send(client, created.json()["id"], b"abc")
        assert done.json()["url"] == content_url("b", "k", base)
        assert (await client.get("/v1/files/b/k")).json()["url"] == content_url("b", "k", base)
        assert (await client.get("/v1/files/b")).json()["data"][0]["url"] == content_url("b", "k", base)
        assert (await client.delete("/v1/files/b/k")).json()["url"] == content_url("b", "k", base)


# --- concurrency and broken requests ---------------------------------------------------------


async def test_a_second_writer_on_a_busy_session_gets_409_at_once(make_app, settings):
    content = b"first-half" + b"second-half"
    started, release = anyio.Event(), anyio.Event()
    results: dict[str, httpx.Response] = {}
    async with http_client(make_app()) as one, http_client(make_app()) as two:  # two 'processes'
        session_id = await start_session(one, "b", "k", len(content))

        async def hold() -> None:
            results["held"] = await send(one, session_id, held_body(content[:10], content[10:], started, release))

        async with anyio.create_task_group() as group:
            group.start_soon(hold)
            with anyio.fail_after(5):
                await started.wait()
                for client in (one, two):
                    body = assert_error(await send(client, session_id, b"XXXXXXXXXXX"), 409)
                    assert "offset" not in body or body["offset"] == 0
                    assert_error(await send(client, session_id, b"XXXXXXXXXXX", offset=0), 409)
            assert (await one.get(session_path(session_id))).json()["offset"] == 0
            release.set()
        assert results["held"].status_code == 200, results["held"].text
        assert results["held"].json()["digest"] == "blake3:" + b3(content)
        assert (await download(two, "b", "k")).content == content


async def test_the_session_is_free_again_after_a_writer_finishes(client):
    started, release = anyio.Event(), anyio.Event()
    session_id = await start_session(client, "b", "k", 6)
    async with anyio.create_task_group() as group:
        group.start_soon(send, client, session_id, held_body(b"a", b"bc", started, release))
        with anyio.fail_after(5):
            await started.wait()
        assert_error(await send(client, session_id, b"def"), 409)
        release.set()
    response = await send(client, session_id, b"def", offset=3)
    assert response.status_code == 200, response.text
    assert (await download(client, "b", "k")).content == b"abcdef"


def disconnecting(app):
    """The app as a server runs it: a body that breaks off reaches it as `http.disconnect`."""

    async def wrapped(scope, receive, send):
        async def receive_or_disconnect():
            try:
                return await receive()
            except BrokenBody:
                return {"type": "http.disconnect"}

        await app(scope, receive_or_disconnect, send)

    return wrapped


@pytest.mark.parametrize("arrival", ["exception", "disconnect"])
@pytest.mark.parametrize("sent", [1000, 2 * MiB + 1000])
async def test_after_a_body_breaks_off_the_offset_matches_the_data_held(make_app, settings, arrival, sent):
    content = os.urandom(3 * MiB)
    app = make_app()
    if arrival == "disconnect":
        app = disconnecting(app)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        session_id = await start_session(client, "b", "k", len(content))
        assert (await send(client, session_id, content[:500])).status_code == 200
        try:
            await send(client, session_id, broken_body(content[500:sent]), offset=500)
        except BrokenBody:
            pass
        info = await client.get(session_path(session_id))
        assert info.status_code == 200, info.text
        offset = info.json()["offset"]
        assert 500 <= offset <= sent
        assert partial_path(settings.data_dir, session_id).stat().st_size >= offset
        done = await send(client, session_id, content[offset:], offset=offset)
        assert done.status_code == 200, done.text
        assert (await download(client, "b", "k")).content == content
        assert not partial_path(settings.data_dir, session_id).exists()


async def test_a_writer_that_outlives_its_lease_never_overwrites_the_next_writers_bytes(make_app):
    """A writes, then pauses past its lock lease (but not past the stall limit); B takes the session over
    and uploads. When A's body goes on, none of A's bytes may land in the file: the two never interleave."""
    started, release = anyio.Event(), anyio.Event()
    results: dict[str, httpx.Response] = {}
    async with http_client(make_app(lock_lease_seconds=0.3)) as client:
        session_id = await start_session(client, "b", "k", 20)

        async def first_writer() -> None:
            results["a"] = await send(client, session_id, held_body(b"A" * 5, b"A" * 5, started, release))

        async with anyio.create_task_group() as group:
            group.start_soon(first_writer)
            with anyio.fail_after(5):
                await started.wait()
                while (taken := await send(client, session_id, b"B" * 10, offset=0)).status_code == 409:
                    await anyio.sleep(0.02)  # polling until A's lease runs out
            assert taken.status_code == 200 and taken.json()["offset"] == 10, taken.text
            release.set()
        assert results["a"].status_code == 409, results["a"].text
        assert (await client.get(session_path(session_id))).json()["offset"] == 10
        done = await send(client, session_id, b"B" * 10, offset=10)
        assert done.status_code == 200, done.text
        assert (await download(client, "b", "k")).content == b"B" * 20
