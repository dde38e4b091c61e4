"""Every script and every multi-key command the service sends touches keys of one hash slot (a Redis
Cluster refuses the others), and the keys still spread over many slots.

The service runs on a client that records each command it sends, through the API, the sweep, a
rebuild and the events' readers; every script the service registers must have run, so a new one
is checked the day it is added (exercise it here).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from apihelpers import b3, send, start, start_session, sweep, upload
from conftest import http_client
from redisrecording import record_round_trips
from test_openai_files import API
from test_openai_files import create as create_openai_file
from test_openai_uploads import add_part, complete, parts_of
from test_openai_uploads import new_upload as new_openai_upload
from test_tus import TUS, create_final, new_partial, new_upload, patch

from service.core.model import Intent
from service.http.app import create_app
from service.redis.events import EventStream
from service.redis.keyspace import KeySpace, key_slot

pytestmark = pytest.mark.anyio

# Commands whose arguments are all keys, of those a client might send with several.
ALL_KEYS = {"MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH", "SINTER", "SUNION", "SDIFF", "PFCOUNT"}


class Recorder:
    """The keys of every script call and multi-key command sent, and the scripts registered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        self.registered: set[str] = set()

    def record(self, args: tuple[Any, ...]) -> None:
        name = str(args[0]).upper()
        if name in ("EVALSHA", "EVAL"):
            count = int(args[2])
            # A script sent whole (in a pipeline) is named by its digest, as one sent by EVALSHA.
            script = hashlib.sha1(str(args[1]).encode()).hexdigest() if name == "EVAL" else str(args[1])
            self.calls.append((script, [str(key) for key in args[3 : 3 + count]]))
        elif name in ALL_KEYS and len(args) > 2:
            self.calls.append((name, [str(key) for key in args[1:]]))

    def across_slots(self) -> list[tuple[str, list[str]]]:
        return [(what, keys) for what, keys in self.calls if len({key_slot(key) for key in keys}) > 1]

    def scripts_run(self) -> set[str]:
        return {what for what, _ in self.calls if what not in ALL_KEYS}


def recording_client(recorder: Recorder) -> fakeredis.FakeAsyncRedis:
    class Recording(fakeredis.FakeAsyncRedis):
        def register_script(self, script: Any) -> Any:
            registered = super().register_script(script)
            recorder.registered.add(registered.sha)
            return registered

    client = Recording(server=fakeredis.FakeServer(), decode_responses=True)
    return record_round_trips(client, lambda trip: [recorder.record(command) for command in trip])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def recorded_app(settings, recorder: Recorder) -> Any:
    return create_app(settings.model_copy(update={"max_open_sessions": 2}), client=recording_client(recorder))


async def exercise(app: Any, settings: Any) -> None:
    """Everything the service does with Redis, once at least."""
    services = app.state.services
    async with http_client(app) as client:
        await upload(client, "b", "whole", b"one")
        await upload(client, "b", "chunks", b"two, in chunks", chunk=4)
        await upload(client, "b", "whole", b"replaced")
        await upload(client, "other", "same", b"one")
        for number in range(5):
            await upload(client, "pages", f"k{number}", b"page")
        assert len((await client.get("/v1/files/pages", params={"limit": 2})).json()["data"]) == 2
        assert (await client.get("/v1/files")).status_code == 200
        assert (await client.delete("/v1/files/b/chunks")).status_code == 200
        assert (await client.delete("/v1/files/b/missing")).status_code == 404
        # A copy, an upload that needs no bytes (its content is held where it may read), a tus concatenation.
        copied = await client.post("/v1/files/b/whole:copy", json={"bucket": "copies", "key": "whole"})
        assert copied.status_code == 200, copied.text
        digest = {"digest": f"blake3:{b3(b'one')}"}
        known = await start(client, "other", "known", 3, **digest)
        assert known.status_code == 200 and "digest" in known.json(), known.text
        parts = [await new_partial(client, piece) for piece in (b"con", b"cat")]
        assert (await create_final(client, parts)).status_code == 201
        # tus with a length declared later.
        path = await new_upload(client, None)
        response = await patch(client, path, 0, b"tus", **{"Upload-Length": "3"})
        assert response.status_code == 204, response.text
        assert (await client.delete(path, headers=TUS)).status_code == 204
        expiring = await exercise_openai(client, services)
        # Sessions: one cancelled, the client's limit reached, then freed by one completing.
        cancelled = await start_session(client, "b", "cancelled", 4)
        assert (await client.delete(f"/v1/files/session:{cancelled}")).status_code in (200, 204)
        open_one = await start_session(client, "b", "open", 4)
        assert (await client.get(f"/v1/files/session:{open_one}")).status_code == 200
        await start_session(client, "b", "open-too", 4)
        refused = await start(client, "b", "x", 1)
        assert refused.status_code == 429, refused.text
        assert (await send(client, open_one, b"done", offset=0)).status_code == 200
        await start_session(client, "b", "admitted", 4)
        await client.delete(f"/v1/files/session:{open_one}")
    # A commit that died half-way, settled by the sweep; a lost index, rebuilt and caught up on.
    intent = Intent(bucket="b", key="stranded", digest="1" * 64)
    lease = await services.leases.acquire(*intent.locks(), intent=intent)
    assert lease is not None and await lease.renew()
    await lease.release()
    keys = KeySpace(settings.redis_prefix)
    await services.client.delete(keys.ready)
    await services.catalog.index.rebuild()
    past = repr(time.time() - 60)
    await services.client.hset(keys.rebuilds, mapping={"earliest": past, "latest": past})
    await sweep(app)
    assert not await services.client.exists(keys.rebuilds), "caught up"
    await services.catalog.index.apply("b")  # as a sweep does for an outbox a dead process left
    async with http_client(app) as client:
        assert len((await client.get("/v1/files/pages")).json()["data"]) == 5
        assert (await client.get(f"{API}/files/{expiring}")).status_code == 404, "swept when it expired"
    # The events' readers (the webhooks' dispatcher shares one group).
    stream = EventStream(services.client, keys.events)
    await stream.join("readers")
    [first, *_] = await stream.take("readers", "one")
    assert await stream.touch("readers", "one", first["id"])
    await stream.ack("readers", first["id"])


async def exercise_openai(client: Any, services: Any) -> str:
    """The OpenAI Files and Uploads routes: files with a purpose and an expiry, listed by purpose either
    way, an upload of parts completed, another cancelled, another swept past its expiry with its parts.
    Returns the id of a file already expired (the sweep deletes it)."""
    for purpose in ("assistants", "batch", "batch"):
        assert (await create_openai_file(client, purpose.encode(), purpose=purpose)).status_code == 200
    file_first = (  # its purpose learned after its bytes: the session's metadata replaced (declare_metadata)
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\nabc\r\n'
        b'--x\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n--x--\r\n'
    )
    headers = {"content-type": "multipart/form-data; boundary=x"}
    assert (await client.post(f"{API}/files", content=file_first, headers=headers)).json()["purpose"] == "vision"
    expired = await create_openai_file(
        client, b"goes", **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "0"}
    )
    assert expired.status_code == 200, expired.text
    for order in ("asc", "desc"):
        listed = await client.get(f"{API}/files", params={"purpose": "batch", "order": order, "limit": 1})
        assert listed.status_code == 200 and len(listed.json()["data"]) == 1, listed.text
    upload = await new_openai_upload(client, 11)
    world, hello = await parts_of(client, upload["id"], b"world", b"hello ")
    completed = await complete(client, upload["id"], [hello, world])
    assert completed.status_code == 200 and completed.json()["status"] == "completed", completed.text
    content = await client.get(f"{API}/files/{completed.json()['file']['id']}/content")
    assert content.content == b"hello world"
    cancelled = await new_openai_upload(client, 3)
    assert (await client.post(f"{API}/uploads/{cancelled['id']}/cancel")).status_code == 200
    abandoned = await new_openai_upload(client, 6)
    await parts_of(client, abandoned["id"], b"abc", b"def")
    assert await services.parted.sweep(abandoned["expires_at"]) == 3  # the records of the other two as well
    assert (await add_part(client, abandoned["id"], b"ghi")).status_code == 404
    return str(expired.json()["id"])


async def test_every_script_and_multi_key_command_touches_one_slot(recorded_app, recorder: Recorder, settings):
    await exercise(recorded_app, settings)
    assert recorder.calls, "nothing was recorded"
    assert recorder.across_slots() == []
    unexercised = recorder.registered - recorder.scripts_run()
    assert not unexercised, "a script the service registered never ran here: exercise it in `exercise`"


async def test_the_check_finds_a_script_over_two_slots(recorded_app, recorder: Recorder, settings):
    """The recorder is not blind: a script given a bucket's key and a content's key is caught."""
    client = recorded_app.state.services.client
    keys = KeySpace(settings.redis_prefix)
    await client.register_script("return 1")(keys=[keys.bucket_keys("b"), keys.refs("1" * 64, "b")])
    assert {tuple(keys) for _, keys in recorder.across_slots()} == {(keys.bucket_keys("b"), keys.refs("1" * 64, "b"))}


def spread(key: Callable[[str], str], count: int = 200) -> int:
    return len({key_slot(key(f"name{number}")) for number in range(count)})


def test_the_keys_of_many_buckets_sessions_and_contents_spread_over_many_slots() -> None:
    keys = KeySpace("files:")
    for key in (keys.bucket_entries, keys.session, keys.holders, keys.open_sessions, keys.parted_upload):
        assert spread(key) > 150, key
    assert key_slot(keys.bucket_entries("b")) == key_slot(keys.lock("entry:b/some/key")) == key_slot(keys.outbox("b"))
    listings = (keys.bucket_entries("b"), keys.bucket_purposes("b"), keys.bucket_expiring("b"))
    assert len({key_slot(key) for key in listings}) == 1
    assert (
        key_slot(keys.refs("ab" * 32, "b"))
        == key_slot(keys.lock("blob:" + "ab" * 32))
        == key_slot(keys.holders("ab" * 32))
    )
    assert key_slot(keys.session("s")) == key_slot(keys.lock("session:s"))
    assert key_slot(keys.ready) == key_slot(keys.lock("index-rebuild")) == key_slot(keys.rebuilds)
    assert key_slot(keys.replication) == key_slot(keys.rebuilds)
