"""The events stream: every change of the catalog appends its event in the same step, and only those."""

from __future__ import annotations

import time

import pytest
from apihelpers import b3, start, sweep, upload
from conftest import http_client, on_both_redises

from service.redis.events import EventStream
from service.redis.keyspace import KeySpace

pytestmark = [pytest.mark.anyio, on_both_redises]


async def events(redis, settings) -> list[dict]:
    stream = EventStream(redis, KeySpace(settings.redis_prefix).events)
    found, last_id = [], "0"
    while page := await stream.after(last_id):
        found += page
        last_id = page[-1]["id"]
    return found


def summary(event: dict) -> tuple:
    return event["type"], event["bucket"], event["key"], event["digest"], event["bytes"], event["mime_type"]


async def test_created_replaced_and_deleted_files_give_their_events_in_order(app, redis, settings):
    before = time.time()
    async with http_client(app) as client:
        await upload(client, "b", "docs/a.txt", b"first", mime_type="text/plain")
        await upload(client, "b", "docs/a.txt", b"replaced", mime_type="text/markdown")
        await upload(client, "other", "k", b"elsewhere")
        assert (await client.delete("/v1/files/b/docs/a.txt")).status_code == 200
        assert (await client.delete("/v1/files/b/docs/a.txt")).status_code == 404
    found = await events(redis, settings)
    assert [summary(event) for event in found] == [
        ("file.created", "b", "docs/a.txt", f"blake3:{b3(b'first')}", 5, "text/plain"),
        ("file.created", "b", "docs/a.txt", f"blake3:{b3(b'replaced')}", 8, "text/markdown"),
        ("file.created", "other", "k", f"blake3:{b3(b'elsewhere')}", 9, "application/octet-stream"),
        ("file.deleted", "b", "docs/a.txt", f"blake3:{b3(b'replaced')}", 8, "text/markdown"),
    ]
    times = [event["time"] for event in found]
    assert times == sorted(times) and before <= times[0] <= time.time()
    assert set(found[0]) == {"id", "type", "bucket", "key", "digest", "bytes", "mime_type", "time"}


async def test_a_copy_and_an_upload_that_needs_no_bytes_each_give_one_file_created(app, redis, settings):
    content = b"stored once, then copied and uploaded again"
    digest = f"blake3:{b3(content)}"
    async with http_client(app) as client:
        await upload(client, "b", "a", content, mime_type="text/plain")
        await upload(client, "c", "k", b"replaced by the copy")
        assert (await client.post("/v1/files/b/a:copy", json={"bucket": "c", "key": "k"})).status_code == 200
        created = await start(client, "d", "k", len(content), "text/markdown", digest=digest)
        assert created.json()["deduplicated"] is True
    assert [summary(event) for event in await events(redis, settings)] == [
        ("file.created", "b", "a", digest, len(content), "text/plain"),
        ("file.created", "c", "k", f"blake3:{b3(b'replaced by the copy')}", 20, "application/octet-stream"),
        ("file.created", "c", "k", digest, len(content), "text/plain"),
        ("file.created", "d", "k", digest, len(content), "text/markdown"),
    ]


async def test_a_rebuild_of_the_lost_index_appends_no_event(app, redis, settings):
    keys = KeySpace(settings.redis_prefix)
    async with http_client(app) as client:
        await upload(client, "b", "kept", b"reloaded, not created")
        # Redis loses the index (not the stream): the rebuild reloads the entry from the volume.
        index_keys = [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}index:*")]
        await redis.delete(*index_keys)
        await sweep(app)
        response = await client.get("/v1/files/b")
        assert [entry["key"] for entry in response.json()["data"]] == ["kept"]
    assert [event["type"] for event in await events(redis, settings)] == ["file.created"]
    assert await redis.exists(keys.ready)


async def test_a_delete_while_the_index_is_lost_gives_its_event(app, redis, settings):
    keys = KeySpace(settings.redis_prefix)
    async with http_client(app) as client:
        await upload(client, "b", "k", b"deleted while Redis had lost the index")
        await redis.delete(*[key async for key in redis.scan_iter(match=f"{settings.redis_prefix}index:*")])
        assert (await client.delete("/v1/files/b/k")).status_code == 200
    assert [event["type"] for event in await events(redis, settings)] == ["file.created", "file.deleted"]
    assert await redis.exists(keys.ready)


async def test_the_stream_is_trimmed_to_about_its_maximum_length(make_app, redis, settings):
    app = make_app(events_maxlen=10)
    async with http_client(app) as client:
        for number in range(300):
            await upload(client, "b", f"k{number}", b"same content")
    found = await events(redis, settings)
    assert 10 <= len(found) < 300
    assert found[-1]["key"] == "k299"
