"""Commits and deletes cut short by a crash, settled by the sweep; stale temporaries swept away.

A crash point here raises instead of exiting the process: the request dies there, its locks go
(as a dead process's lease runs out) and its intent stays in Redis, as after a kill.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from apihelpers import b3, blob_path, download, send, start_session, sweep, upload
from conftest import http_client, on_both_redises

import service.core.catalog
import service.core.uploads
import service.ops.sweeper
import service.redis.index
import service.redis.intents
from service.core.model import Intent
from service.redis.keyspace import KeySpace
from service.redis.references import end, reference
from service.storage.durable import temporary_path

pytestmark = [pytest.mark.anyio, on_both_redises]


@pytest.fixture
def keys(settings) -> KeySpace:
    return KeySpace(settings.redis_prefix)


class Crash(BaseException):
    """The process dying at a crash point (a BaseException: no handler of the service catches it)."""


@pytest.fixture
def crash_at(monkeypatch):
    """`crash_at(point)`: the next commit to reach `point` dies there (once)."""

    def arm(point: str) -> None:
        armed = [point]

        def crash_point(name: str) -> None:
            if name in armed:
                armed.clear()
                raise Crash(point)

        monkeypatch.setattr(service.core.catalog, "crash_point", crash_point)
        monkeypatch.setattr(service.core.uploads, "crash_point", crash_point)
        monkeypatch.setattr(service.redis.index, "crash_point", crash_point)

    return arm


async def crashed_upload(client, bucket: str, key: str, content: bytes) -> None:
    """An upload whose commit dies, in a service whose index is complete (it has been listed)."""
    await listed(client, bucket)
    session_id = await start_session(client, bucket, key, len(content))
    with pytest.raises(Crash):
        await send(client, session_id, content, offset=0)


async def listed(client, bucket: str) -> list[str]:
    response = await client.get(f"/v1/files/{bucket}")
    assert response.status_code == 200, response.text
    return [entry["key"] for entry in response.json()["data"]]


async def assert_whole(client, data: Path, bucket: str, key: str, content: bytes) -> None:
    """The file is there to every reader: info, listing, download, its blob, its one reference."""
    info = await client.get(f"/v1/files/{bucket}/{key}")
    assert info.status_code == 200 and info.json()["digest"] == f"blake3:{b3(content)}"
    assert key in await listed(client, bucket)
    response = await download(client, bucket, key)
    assert response.status_code == 200 and response.content == content
    assert blob_path(data, b3(content)).exists()


async def assert_absent(client, data: Path, bucket: str, key: str, content: bytes) -> None:
    assert (await client.get(f"/v1/files/{bucket}/{key}")).status_code == 404
    assert key not in await listed(client, bucket)
    assert not blob_path(data, b3(content)).exists(), "the blob of a rolled-back commit was kept"


async def references(redis, keys: KeySpace, content: bytes) -> int:
    """How many entries (or commits in flight) of any bucket refer to the content."""
    buckets = await redis.smembers(keys.holders(b3(content)))
    return sum([int(await redis.scard(keys.refs(b3(content), bucket))) for bucket in buckets])


async def test_a_commit_that_died_after_placing_its_blob_is_rolled_back(app, redis, settings, crash_at, keys):
    crash_at("blob-placed")
    async with http_client(app) as client:
        await crashed_upload(client, "b", "k", b"placed, never recorded")
        assert blob_path(settings.data_dir, b3(b"placed, never recorded")).exists()
        await sweep(app)
        await assert_absent(client, settings.data_dir, "b", "k", b"placed, never recorded")
    assert await redis.hlen(keys.intents("b")) == 0


@pytest.mark.parametrize("point", ["entry-written", "index-updated", "committed"])
async def test_a_commit_that_died_after_writing_its_entry_is_rolled_forward(
    app, redis, settings, crash_at, point, keys
):
    content = b"written, maybe never counted"
    crash_at(point)
    async with http_client(app) as client:
        await crashed_upload(client, "b", "k", content)
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)
        assert await references(redis, keys, content) == 1
        # The sequence: the same content under another key, then that key deleted.
        await upload(client, "b", "other", content)
        assert (await client.delete("/v1/files/b/other")).status_code == 200
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)
    assert await redis.hlen(keys.intents("b")) == 0


async def test_before_the_sweep_a_delete_of_the_same_content_keeps_the_blob_of_an_uncounted_entry(
    app, redis, settings, crash_at
):
    """The intent names the content until it is settled: freeing the blob waits for it."""
    content = b"counted only once settled"
    crash_at("entry-written")
    async with http_client(app) as client:
        await crashed_upload(client, "b", "k", content)
        await upload(client, "b", "other", content)
        assert (await client.delete("/v1/files/b/other")).status_code == 200
        assert (await download(client, "b", "k")).content == content
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)


async def test_two_dead_commits_of_one_content_keep_the_blob_the_written_one_needs(
    app, redis, settings, crash_at, keys
):
    """One died after placing the blob, the next (deduplicated onto it) after writing its entry:
    settling the first must not free what the second's entry needs, whichever comes first."""
    content = b"shared by two dead commits"
    async with http_client(app) as client:
        crash_at("blob-placed")
        await crashed_upload(client, "b", "first", content)
        crash_at("entry-written")
        await crashed_upload(client, "b", "second", content)
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "second", content)
        assert (await client.get("/v1/files/b/first")).status_code == 404
        assert await references(redis, keys, content) == 1


async def test_a_replacement_rolled_forward_frees_the_content_it_replaced(app, redis, settings, crash_at, keys):
    async with http_client(app) as client:
        await upload(client, "b", "k", b"old content")
        crash_at("entry-written")
        await crashed_upload(client, "b", "k", b"new content")
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", b"new content")
        assert not blob_path(settings.data_dir, b3(b"old content")).exists()
        assert await references(redis, keys, b"old content") == 0


async def test_a_delete_that_died_after_removing_the_entry_is_finished(app, redis, settings, monkeypatch):
    content = b"deleted half-way"
    async with http_client(app) as client:
        await upload(client, "b", "k", content)
        index = app.state.services.catalog.index

        async def die(*args, **kwargs):
            raise Crash("index.remove")

        monkeypatch.setattr(index, "remove", die)
        with pytest.raises(Crash):
            await client.delete("/v1/files/b/k")
        assert "k" in await listed(client, "b"), "the index still lists the entry gone from the volume"
        monkeypatch.undo()
        await sweep(app)
        await assert_absent(client, settings.data_dir, "b", "k", content)


async def test_an_intent_whose_process_still_holds_its_locks_is_left_alone(app, redis, settings, keys):
    services = app.state.services
    intent = Intent(bucket="b", key="k", digest=b3(b"x"))
    lease = await services.leases.acquire(*intent.locks(), intent=intent)
    assert lease is not None
    assert await services.catalog.settle_stranded() == 0
    assert await redis.hget(keys.intents("b"), lease.token) == intent.model_dump_json()
    await lease.release()
    assert await services.catalog.settle_stranded() == 1
    assert await redis.hlen(keys.intents("b")) == 0


async def test_finished_work_leaves_no_intent(client, redis, keys):
    await upload(client, "b", "k", b"content")
    await upload(client, "b", "k", b"replaced")
    await upload(client, "b", "same", b"replaced")
    assert (await client.delete("/v1/files/b/same")).status_code == 200
    assert (await client.delete("/v1/files/b/missing")).status_code == 404
    assert await redis.hlen(keys.intents("b")) == 0


async def test_a_damaged_entry_under_one_intent_does_not_stop_the_others_being_settled(app, settings, crash_at):
    async with http_client(app) as client:
        crash_at("entry-written")
        await crashed_upload(client, "b", "damaged", b"one")
        crash_at("entry-written")
        await crashed_upload(client, "b", "fine", b"two")
        [damaged] = [
            path for path in settings.data_dir.joinpath("entries").rglob("*.json") if b"damaged" in path.read_bytes()
        ]
        damaged.write_bytes(b"{not json")
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "fine", b"two")


# --- a commit that died while Redis lost its data and a rebuild ran -------------------------------


async def lost_with_redis(redis, keys: KeySpace, rebuild_began: float) -> None:
    """Redis lost the dead commit's intent with its data, and a rebuild that began at `rebuild_began`
    scanned the volume before the commit wrote its entry: the index is complete but for it."""
    for token, recorded in (await redis.hgetall(keys.intents("b"))).items():
        intent = Intent.model_validate_json(recorded)
        async with redis.pipeline(transaction=False) as pipe:
            end(pipe, keys, intent.digest, intent.bucket, reference(intent.bucket, intent.key, token))
            await pipe.execute()
    await redis.delete(keys.intents("b"))
    await redis.hset(keys.rebuilds, mapping={"earliest": repr(rebuild_began), "latest": repr(rebuild_began)})


async def test_an_entry_written_behind_a_rebuild_by_a_process_that_died_is_caught_up(
    app, redis, settings, crash_at, keys
):
    content = b"written behind the rebuild's scan"
    async with http_client(app) as client:
        crash_at("entry-written")
        await crashed_upload(client, "b", "k", content)
        await lost_with_redis(redis, keys, rebuild_began=time.time() - 60)
        assert "k" not in await listed(client, "b")
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)
        assert await references(redis, keys, content) == 1
        assert not await redis.exists(keys.rebuilds), "caught up, the rebuild is forgotten"
        await upload(client, "b", "other", content)
        assert (await client.delete("/v1/files/b/other")).status_code == 200
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)


async def test_a_replacement_written_behind_a_rebuild_is_caught_up_and_frees_the_old_content(
    app, redis, settings, crash_at, keys
):
    async with http_client(app) as client:
        await upload(client, "b", "k", b"old content")
        crash_at("entry-written")
        await crashed_upload(client, "b", "k", b"new content")
        await lost_with_redis(redis, keys, rebuild_began=time.time() - 60)
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", b"new content")
        assert await references(redis, keys, b"old content") == 0
        assert not blob_path(settings.data_dir, b3(b"old content")).exists()


async def test_the_catch_up_waits_until_a_lease_has_passed_since_the_latest_rebuild(
    app, redis, settings, crash_at, keys
):
    async with http_client(app) as client:
        crash_at("entry-written")
        await crashed_upload(client, "b", "k", b"still maybe in flight")
        await lost_with_redis(redis, keys, rebuild_began=time.time() - 60)
        await redis.hset(keys.rebuilds, "latest", repr(time.time() + 3600))  # a rebuild still running
        await sweep(app)
        assert "k" not in await listed(client, "b")
        assert await redis.exists(keys.rebuilds)


@pytest.mark.parametrize("rebuilt", [False, True], ids=["then-counted", "then-rebuilt-then-counted"])
async def test_a_commit_that_outlived_redis_losing_its_data_keeps_its_content_referenced(
    app, redis, settings, monkeypatch, keys, rebuilt
):
    """Redis lost its data (restarted empty) after a commit took its locks and claimed its content,
    before the commit counted its entry in: the claim went with the data, so the entry counted in
    must bring a reference of its own, or the sweep frees a listed file's blob."""
    content = b"claimed before Redis lost its data, counted after"
    count_in = service.redis.index.EntryIndex.put

    async def put_after_redis_lost_its_data(index, entry, release=None):
        monkeypatch.setattr(service.redis.index.EntryIndex, "put", count_in)
        await redis.delete(*[key async for key in redis.scan_iter(match=f"{settings.redis_prefix}*")])
        if rebuilt:  # another process rebuilt the index meanwhile: it found the entry on the volume
            await index.rebuild()
        return await count_in(index, entry, release)

    async with http_client(app) as client:
        await listed(client, "b")
        session_id = await start_session(client, "b", "k", len(content))
        monkeypatch.setattr(service.redis.index.EntryIndex, "put", put_after_redis_lost_its_data)
        await send(client, session_id, content, offset=0)  # its session went with the data: no answer to check
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)
        assert await references(redis, keys, content) == 1


async def test_an_intent_read_just_before_its_commit_finished_is_left_alone(app, redis, settings, monkeypatch, keys):
    """The sweep reads the intents, then their locks: a commit that finishes in between looks
    stranded. Its claim's member is then its entry's reference: settling must not end it."""
    content = b"finished between the sweep's two reads"
    async with http_client(app) as client:
        session_id = await start_session(client, "b", "k", len(content))
        read = service.redis.intents.Intents.stranded

        async def read_before_the_commit_finished(intents):
            monkeypatch.setattr(service.redis.intents.Intents, "stranded", read)
            recorded = await read(intents)  # the commit has not begun yet: nothing to settle
            assert recorded == []
            intent = Intent(bucket="b", key="k", digest=b3(content))
            lease = await app.state.services.leases.acquire(*intent.locks(), intent=intent)
            token = lease.token
            await lease.release()  # its locks go (the intent stays), then the commit finishes
            await send(client, session_id, content, offset=0)
            member = await redis.hget(keys.bucket_members("b"), "k")
            assert member is not None
            return [(member.rsplit("/", 1)[1], intent), (token, intent)]

        monkeypatch.setattr(service.redis.intents.Intents, "stranded", read_before_the_commit_finished)
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)
        assert await references(redis, keys, content) == 1


@pytest.mark.parametrize("size", [4096, 2 * 1024 * 1024], ids=["in-memory", "staged"])
async def test_a_commit_settled_by_the_sweep_before_it_wrote_its_entry_places_its_blob_again(
    app, redis, settings, monkeypatch, keys, size
):
    """A commit stalled past its lease between placing its blob and writing its entry: the sweep
    settles it as cut short (no entry yet: rolled back, its blob freed). Then the commit goes on and
    answers 200: the file must be whole, its blob placed again."""
    content = os.urandom(size)
    catalog = app.state.services.catalog
    write_entry = catalog.entries.put
    loop = asyncio.get_running_loop()

    async def lease_runs_out_and_the_sweep_settles() -> None:
        intent = Intent(bucket="b", key="k", digest=b3(content))
        await redis.delete(*(keys.lock(name) for name in intent.locks()))
        assert await catalog.settle_stranded() == 1
        assert not blob_path(settings.data_dir, b3(content)).exists()

    def stalled_put(entry):
        monkeypatch.setattr(catalog.entries, "put", write_entry)
        asyncio.run_coroutine_threadsafe(lease_runs_out_and_the_sweep_settles(), loop).result()
        return write_entry(entry)

    async with http_client(app) as client:
        await listed(client, "b")
        session_id = await start_session(client, "b", "k", len(content))
        monkeypatch.setattr(catalog.entries, "put", stalled_put)
        done = await send(client, session_id, content, offset=0)
        assert done.status_code == 200, done.text
        await sweep(app)
        await assert_whole(client, settings.data_dir, "b", "k", content)
        assert await references(redis, keys, content) == 1


async def test_a_rebuild_records_when_it_began(client, redis, keys):
    await upload(client, "b", "k", b"content")
    await redis.delete(keys.ready)  # Redis lost the index
    before = time.time()
    assert "k" in await listed(client, "b")
    earliest, latest = await redis.hmget(keys.rebuilds, ["earliest", "latest"])
    assert before <= float(earliest) == float(latest) <= time.time()


# --- temporaries ------------------------------------------------------------------------------


def leave_temporaries(settings) -> list[Path]:
    """A temporary in each of blobs/, entries/ and partial/, as a writer killed before its rename leaves."""
    data = settings.data_dir
    made = []
    for target in (data / "blobs" / "ab" / "cd" / ("ab" * 32), data / "entries" / "b" / "ab" / "x.json"):
        target.parent.mkdir(parents=True, exist_ok=True)
        made.append(temporary_path(target))
        made[-1].write_bytes(b"left behind")
    made.append(temporary_path(data / "partial" / "some-session"))
    made[-1].write_bytes(b"left behind")
    return made


async def test_the_sweep_removes_temporaries_once_older_than_a_lease_and_not_before(app, settings):
    temporaries = leave_temporaries(settings)
    await sweep(app)
    assert all(path.exists() for path in temporaries), "a temporary younger than a lease was removed"
    deadline = time.monotonic() + settings.lock_lease_seconds + 10
    while any(path.exists() for path in temporaries):
        assert time.monotonic() < deadline, [path for path in temporaries if path.exists()]
        await sweep(app)


async def test_a_fresh_link_to_an_old_file_is_young(app, settings):
    """os.link keeps the source's mtime: the age that counts is the link's (the inode's ctime)."""
    source = settings.data_dir / "partial" / "old-session"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"written an hour ago")
    an_hour_ago = time.time() - 3600
    os.utime(source, (an_hour_ago, an_hour_ago))
    link = temporary_path(settings.data_dir / "blobs" / "ab" / "cd" / ("ab" * 32))
    link.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, link)
    assert link.stat().st_mtime < time.time() - 3000
    await app.state.services.sweeper.sweep_once()
    assert link.exists()


async def test_a_temporary_in_partial_is_no_session_of_its_own(client, settings, app):
    session_id = await start_session(client, "b", "k", 10)
    assert (await send(client, session_id, b"12345", offset=0)).status_code == 200
    [temporary] = [path for path in leave_temporaries(settings) if path.parent.name == "partial"]
    await sweep(app)
    assert temporary.exists() and (settings.data_dir / "partial" / session_id).exists()


@pytest.mark.parametrize("point", ["blob-placed", "entry-written", "change-indexed", "index-updated"])
async def test_a_commit_cut_short_has_its_event_exactly_when_its_change_is_settled(
    app, redis, settings, crash_at, point, keys
):
    """Before the index update no event; after it, the outbox (written in the same step) gives the one
    the change missed; the settling of a change not counted in gives its own."""
    crash_at(point)
    async with http_client(app) as client:
        await crashed_upload(client, "b", "k", b"one event or none")
        await sweep(app)
        await applied(app, redis, keys, settings)
    found = await redis.xrange(keys.events)
    expected = [] if point == "blob-placed" else [("file.created", "k", f"blake3:{b3(b'one event or none')}")]
    assert [(fields["type"], fields["key"], fields["digest"]) for _, fields in found] == expected


@pytest.mark.parametrize("point", ["blob-placed", "entry-written", "index-updated"])
async def test_a_copy_cut_short_is_settled_and_the_blob_kept_while_it_may_be_needed(
    app, redis, settings, crash_at, point, keys
):
    content = b"copied, and the copy's process died"
    async with http_client(app) as client:
        await upload(client, "b", "source", content)
        await listed(client, "b")
        crash_at(point)
        with pytest.raises(Crash):
            await client.post("/v1/files/b/source:copy", json={"bucket": "b", "key": "copy"})
        # The source goes before the sweep: the copy's intent, which names the content, keeps its blob.
        assert (await client.delete("/v1/files/b/source")).status_code == 200
        assert blob_path(settings.data_dir, b3(content)).exists()
        await sweep(app)
        if point == "blob-placed":  # before the copy's entry was written: rolled back, and nothing needs the blob
            await assert_absent(client, settings.data_dir, "b", "copy", content)
        else:
            await assert_whole(client, settings.data_dir, "b", "copy", content)
            assert await references(redis, keys, content) == 1
    assert await redis.hlen(keys.intents("b")) == 0


async def applied(app, redis, keys: KeySpace, settings) -> None:
    """Sweep until bucket b's outbox is applied: a dead process's hold on it runs out after a lease."""
    deadline = time.monotonic() + settings.lock_lease_seconds + 10
    while await redis.llen(keys.outbox("b")):
        assert time.monotonic() < deadline, "the outbox was never applied"
        await sweep(app)


async def test_an_event_appended_by_a_process_that_died_before_clearing_its_outbox_comes_again(
    app, redis, settings, crash_at, keys
):
    """At least once: the item stays until its event is appended, so a crash between the two repeats it,
    once the dead process's hold on the outbox has run out; the index and the references are right."""
    crash_at("outbox-applied")
    async with http_client(app) as client:
        await crashed_upload(client, "b", "k", b"appended, not cleared")
        assert len(await redis.xrange(keys.events)) == 1
        await applied(app, redis, keys, settings)
        await assert_whole(client, settings.data_dir, "b", "k", b"appended, not cleared")
        assert await references(redis, keys, b"appended, not cleared") == 1
    found = [(fields["type"], fields["key"]) for _, fields in await redis.xrange(keys.events)]
    assert found == [("file.created", "k")] * 2


async def test_events_left_in_an_outbox_come_before_the_next_change_of_that_bucket(
    app, redis, crash_at, keys, settings
):
    """In order per key: the changes of the bucket made meanwhile wait behind what the dead process left
    (and its hold on the outbox, a lease), then all are applied in order."""
    async with http_client(app) as client:
        crash_at("change-indexed")
        await crashed_upload(client, "b", "k", b"first")
        assert await redis.xlen(keys.events) == 0
        await upload(client, "b", "k", b"second")
        assert (await client.delete("/v1/files/b/k")).status_code == 200
        await applied(app, redis, keys, settings)
    found = [(fields["type"], fields["digest"]) for _, fields in await redis.xrange(keys.events)]
    assert found == [
        ("file.created", f"blake3:{b3(b'first')}"),
        ("file.created", f"blake3:{b3(b'second')}"),
        ("file.deleted", f"blake3:{b3(b'second')}"),
    ]


async def test_the_loops_sweeps_walk_the_whole_store_only_once_the_last_walks_pause_is_over(app, settings, monkeypatch):
    """A walk over every file takes time in proportion to the store: the loop's sweeps pause WALK_PAUSE times
    as long as it took before the next one; a sweep asked for directly walks at once."""
    monkeypatch.setattr(service.ops.sweeper, "WALK_PAUSE", 100_000)  # a pause no test outlasts
    sweeper = app.state.services.sweeper
    stray = blob_path(settings.data_dir, b3(b"no entry needs this"))

    assert (await sweeper.sweep_once(paced=True)) is not None
    assert await sweeper.client.pttl(sweeper.keys.walked) > 0
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"no entry needs this")
    await sweeper.sweep_once(paced=True)
    assert stray.exists(), "a paced sweep walked the store before the pause was over"

    await sweeper.sweep_once()
    assert not stray.exists()

    stray.write_bytes(b"no entry needs this")
    await sweeper.client.delete(sweeper.keys.walked)  # the pause is over
    await sweeper.sweep_once(paced=True)
    assert not stray.exists()
