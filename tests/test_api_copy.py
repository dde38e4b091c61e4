"""`POST /v1/files/<bucket>/<key>:copy`: a new key for stored content, without the bytes moving again.

The copy names the same blob (the blob directory does not change), survives the deletion of its
source, replaces its target, and needs read on the source's bucket and write on the target's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from apihelpers import assert_error, b3, blob_files, blob_path, content_url, download, sweep, upload
from conftest import http_client, on_both_redises

from service.core.auth import new_token
from service.redis.keyspace import KeySpace

pytestmark = pytest.mark.anyio

CONTENT = b"the content of a file that is copied, not sent again"


async def copy(client, source: str, bucket: str, key: str, **extra) -> object:
    return await client.post(f"/v1/files/{source}:copy", json={"bucket": bucket, "key": key, **extra})


async def test_a_copy_is_a_new_file_of_the_same_blob(client, settings):
    original = await upload(client, "src", "docs/a.txt", CONTENT, mime_type="text/plain", metadata={"team": "ml"})
    blobs = blob_files(settings.data_dir)
    before = int(time.time())

    response = await copy(client, "src/docs/a.txt", "dst", "copies/a.txt")

    assert response.status_code == 200, response.text
    copied = response.json()
    assert copied == {
        "bucket": "dst",
        "key": "copies/a.txt",
        "mime_type": "text/plain",
        "url": content_url("dst", "copies/a.txt"),
        "bytes": len(CONTENT),
        "created_at": copied["created_at"],
        "digest": original["digest"],
        "metadata": {"team": "ml"},
    }
    assert before <= copied["created_at"] <= time.time()
    assert blob_files(settings.data_dir) == blobs == [blob_path(settings.data_dir, original["digest"])]
    assert (await client.get("/v1/files/dst/copies/a.txt")).json() == copied
    assert (await download(client, "dst", "copies/a.txt")).content == CONTENT
    assert (await client.get("/v1/files/src/docs/a.txt")).json() == original


async def test_deleting_the_source_keeps_the_copys_content(app, client, settings):
    await upload(client, "src", "a", CONTENT)
    assert (await copy(client, "src/a", "src", "b")).status_code == 200
    assert (await client.delete("/v1/files/src/a")).status_code == 200
    await sweep(app)
    assert (await download(client, "src", "b")).content == CONTENT
    assert blob_files(settings.data_dir) == [blob_path(settings.data_dir, b3(CONTENT))]
    # The last entry of the content goes: so does its blob.
    assert (await client.delete("/v1/files/src/b")).status_code == 200
    assert blob_files(settings.data_dir) == []


async def test_metadata_given_replaces_the_sources(client):
    await upload(client, "src", "a", CONTENT, metadata={"team": "ml", "stage": "raw"})
    replaced = await copy(client, "src/a", "dst", "a", metadata={"stage": "clean"})
    assert replaced.json()["metadata"] == {"stage": "clean"}
    emptied = await copy(client, "src/a", "dst", "b", metadata={})
    assert emptied.json()["metadata"] == {}
    kept = await copy(client, "src/a", "dst", "c", metadata=None)
    assert kept.json()["metadata"] == {"team": "ml", "stage": "raw"}


async def test_a_copy_over_an_existing_key_replaces_it_and_frees_its_blob(client, settings):
    await upload(client, "src", "a", CONTENT)
    await upload(client, "dst", "a", b"older content of the target")
    response = await copy(client, "src/a", "dst", "a")
    assert response.status_code == 200
    assert (await download(client, "dst", "a")).content == CONTENT
    assert blob_files(settings.data_dir) == [blob_path(settings.data_dir, b3(CONTENT))]


async def test_a_copy_onto_itself_keeps_the_file(client):
    await upload(client, "src", "a", CONTENT)
    response = await copy(client, "src/a", "src", "a", metadata={"note": "renewed"})
    assert response.status_code == 200
    assert (await client.get("/v1/files/src/a")).json()["metadata"] == {"note": "renewed"}
    assert (await download(client, "src", "a")).content == CONTENT


async def test_a_missing_source_is_404_and_nothing_is_written(client):
    assert_error(await copy(client, "src/none", "dst", "a"), 404)
    await upload(client, "src", "a", CONTENT)
    assert_error(await copy(client, "src/ab", "dst", "a"), 404)
    assert (await client.get("/v1/files")).json() == {"data": [{"name": "src"}]}


async def test_a_source_whose_blob_is_gone_is_404(client, settings):
    await upload(client, "src", "a", CONTENT)
    blob_path(settings.data_dir, b3(CONTENT)).unlink()
    body = assert_error(await copy(client, "src/a", "dst", "a"), 404)
    assert "missing from the blob store" in body["detail"]
    assert_error(await client.get("/v1/files/dst/a"), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"bucket": "dst"},
        {"key": "a"},
        {"bucket": "bad.bucket", "key": "a"},
        {"bucket": "dst", "key": "../a"},
        {"bucket": "dst", "key": "a", "metadata": {"bad name": "x"}},
        {"bucket": "dst", "key": "a", "metadata": {"n": 1}},
        {"bucket": 1, "key": "a"},
    ],
)
async def test_a_bad_body_is_400_and_nothing_is_written(client, body):
    await upload(client, "src", "a", CONTENT)
    assert_error(await client.post("/v1/files/src/a:copy", json=body), 400)
    assert_error(await client.post("/v1/files/src/a:copy", content=b"{not json"), 400)
    assert (await client.get("/v1/files")).json() == {"data": [{"name": "src"}]}


@pytest.mark.parametrize("source", ["bad.bucket/a", "src/a//b"])
async def test_a_bad_source_name_is_400(client, source):
    assert_error(await client.post(f"/v1/files/{source}:copy", json={"bucket": "dst", "key": "a"}), 400)


# --- access control ------------------------------------------------------------------------------

GRANTS = {
    "admin": {"*": ["read", "write", "delete"]},
    "copier": {"src": ["read"], "dst": ["write"]},
    "no-read-src": {"src": ["write"], "dst": ["read", "write"]},
    "no-write-dst": {"src": ["read", "write"], "dst": ["read"]},
}
TOKENS = {name: new_token(name, grants) for name, grants in GRANTS.items()}  # type: ignore[arg-type]


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry for _, entry in TOKENS.values()]}))
    return path


async def test_a_copy_needs_read_on_the_source_and_write_on_the_target(make_app, tokens_file):
    async with http_client(make_app(auth_tokens_file=tokens_file)) as client:
        client.headers.update(bearer("admin"))
        await upload(client, "src", "a", CONTENT)

        client.headers.update(bearer("copier"))
        assert (await copy(client, "src/a", "dst", "a")).status_code == 200
        # Read on the source alone is not write on it, nor is write on the target read there.
        assert_error(await copy(client, "src/a", "src", "b"), 403)
        assert_error(await copy(client, "dst/a", "dst", "b"), 403)

        client.headers.update(bearer("no-read-src"))
        # 403 before any lookup: whether the source exists is not told to who may not read it.
        assert_error(await copy(client, "src/a", "dst", "b"), 403)
        assert_error(await copy(client, "src/none", "dst", "b"), 403)

        client.headers.update(bearer("no-write-dst"))
        assert_error(await copy(client, "src/a", "dst", "b"), 403)

        del client.headers["Authorization"]
        response = await copy(client, "src/a", "dst", "b")
        assert_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"

        client.headers.update(bearer("admin"))
        assert [file["key"] for file in (await client.get("/v1/files/dst")).json()["data"]] == ["a"]


# --- the index ------------------------------------------------------------------------------------


@on_both_redises
async def test_a_copy_counts_its_reference_and_its_bucket_as_a_holder(app, redis, settings):
    keys = KeySpace(settings.redis_prefix)
    async with http_client(app) as client:
        await upload(client, "src", "a", CONTENT)
        await upload(client, "dst", "a", b"replaced by the copy")
        assert (await copy(client, "src/a", "dst", "a")).status_code == 200
    assert await redis.smembers(keys.holders(b3(CONTENT))) == {"src", "dst"}
    assert [await redis.scard(keys.refs(b3(CONTENT), bucket)) for bucket in ("src", "dst")] == [1, 1]
    assert not await redis.exists(keys.holders(b3(b"replaced by the copy")))
    assert not await redis.exists(keys.refs(b3(b"replaced by the copy"), "dst"))
    assert not await redis.hlen(keys.intents("src")) and not await redis.hlen(keys.intents("dst"))
