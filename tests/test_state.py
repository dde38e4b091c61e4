"""The session state machine, the leases and the listing index, without HTTP, on fakeredis and a real Redis."""

from __future__ import annotations

import anyio
import pytest
from conftest import on_both_redises

from service.core.errors import LostLease, SessionBusy, SessionCompleted, SessionNotFound, TooManySessions
from service.core.model import Entry, Intent
from service.core.names import new_session_id
from service.redis.index import EntryIndex
from service.redis.keyspace import KeySpace
from service.redis.leases import Leases
from service.redis.sessions import SessionStore
from service.storage.entries import EntryStore

pytestmark = [pytest.mark.anyio, on_both_redises]


@pytest.fixture
def keys(settings) -> KeySpace:
    return KeySpace(settings.redis_prefix)


@pytest.fixture
def leases(redis, keys) -> Leases:
    return Leases(redis, keys, seconds=5)


@pytest.fixture
def sessions(redis, keys, leases) -> SessionStore:
    return SessionStore(redis, keys, leases, ttl_seconds=100)


@pytest.fixture
def index(redis, keys, leases, tmp_path) -> EntryIndex:
    return EntryIndex(redis, keys, leases, EntryStore(tmp_path / "entries"), events_maxlen=1000)


async def open_session(sessions: SessionStore, requester: str = "tester", max_open: int = 100):
    return await sessions.create(new_session_id(), "b", "k", "text/plain", 10, None, None, requester, max_open, {})


def entry(key: str, digest: str = "a" * 64, bucket: str = "b") -> Entry:
    return Entry(bucket=bucket, key=key, mime_type="text/plain", bytes=1, created_at=1, digest=digest)


async def test_a_session_moves_from_open_to_complete(sessions):
    session = await open_session(sessions)
    found, lease = await sessions.begin_write(session.id)
    assert found == session
    half = await sessions.advance(found, lease, 5)
    assert (await sessions.get(session.id)).offset == 5
    await sessions.advance(half, lease, 10, complete=True)
    await lease.release()
    done = await sessions.get(session.id)
    assert done.completed and done.offset == 10
    with pytest.raises(SessionCompleted):
        await sessions.begin_write(session.id)


async def test_one_writer_at_a_time_and_the_lock_frees_on_release(sessions):
    session = await open_session(sessions)
    _, lease = await sessions.begin_write(session.id)
    with pytest.raises(SessionBusy):
        await sessions.begin_write(session.id)
    await lease.release()
    _, again = await sessions.begin_write(session.id)
    await again.release()


async def test_a_writer_whose_lease_ran_out_cannot_move_the_offset(sessions, redis):
    session = await open_session(sessions)
    found, lease = await sessions.begin_write(session.id)
    await redis.delete(lease.key)  # the lease expired
    _, usurper = await sessions.begin_write(session.id)
    with pytest.raises(LostLease):
        await sessions.advance(found, lease, 5)
    await lease.release()  # must not free the usurper's lock
    with pytest.raises(SessionBusy):
        await sessions.begin_write(session.id)
    await usurper.release()


async def test_the_offset_moves_only_from_where_the_writer_found_it(sessions):
    session = await open_session(sessions)
    found, lease = await sessions.begin_write(session.id)
    await sessions.advance(found, lease, 4)
    with pytest.raises(LostLease):
        await sessions.advance(found, lease, 8)  # found.offset is stale (0)
    assert (await sessions.get(session.id)).offset == 4


async def test_unknown_and_vanished_sessions(sessions, redis, keys):
    with pytest.raises(SessionNotFound):
        await sessions.get("0" * 32)
    with pytest.raises(SessionNotFound):
        await sessions.begin_write("0" * 32)
    session = await open_session(sessions)
    found, lease = await sessions.begin_write(session.id)
    await redis.delete(keys.session(session.id))
    with pytest.raises(SessionNotFound):
        await sessions.advance(found, lease, 3)
    assert not await redis.exists(keys.session(session.id))


async def test_open_sessions_per_requester_are_limited_and_finished_ones_do_not_count(sessions):
    first = await open_session(sessions, max_open=2)
    await open_session(sessions, max_open=2)
    with pytest.raises(TooManySessions):
        await open_session(sessions, max_open=2)
    await open_session(sessions, requester="someone-else", max_open=2)
    found, lease = await sessions.begin_write(first.id)
    await sessions.advance(found, lease, 10, complete=True)
    await lease.release()
    await open_session(sessions, max_open=2)


async def test_every_request_renews_the_ttl(sessions, redis, keys):
    session = await open_session(sessions)
    await redis.expire(keys.session(session.id), 3)
    await sessions.get(session.id)
    assert await redis.ttl(keys.session(session.id)) > 50


async def test_leases_hold_waits_for_the_holder(leases):
    held = await leases.acquire("x")
    assert held is not None
    assert await leases.acquire("x") is None
    await held.release()
    async with leases.hold("x") as lease:
        assert await leases.acquire("x") is None
        assert await lease.renew()
    assert await leases.acquire("x") is not None


async def test_a_lease_kept_alive_outlives_its_term_and_ends_with_the_work(redis, keys):
    """kept_alive renews a lease of 0.3 s through a second of work; afterwards nothing renews it."""
    leases = Leases(redis, keys, seconds=0.3)
    lease = await leases.acquire("x")
    async with lease.kept_alive():
        deadline = anyio.current_time() + 1.0
        while anyio.current_time() < deadline:
            assert await redis.get(lease.key) == lease.token
            await anyio.sleep(0.05)
    with anyio.fail_after(2):
        while await redis.exists(lease.key):  # no renewal left running: the lease runs out
            await anyio.sleep(0.05)
    assert await leases.acquire("x") is not None


async def test_index_put_can_let_go_of_a_lease_in_the_same_step(index, leases, redis, keys):
    intent = Intent(bucket="b", key="k", digest="1" * 64)
    lease = await leases.acquire(*intent.locks(), intent=intent)
    assert await redis.scard(keys.refs("1" * 64, "b")) == 1, "the commit claims its content with its locks"
    await index.put(entry("k", digest="1" * 64), release=lease)
    assert lease.released and await redis.keys(keys.lock("*")) == []
    assert await redis.hlen(keys.intents("b")) == 0
    assert await redis.scard(keys.refs("1" * 64, "b")) == 1, "the claim is the entry's reference now"


async def test_a_lease_over_two_slots_is_taken_whole_or_not_at_all(leases, redis, keys):
    """The blob's lock and claim are taken last: when it is busy, the entry's lock and the intent go again."""
    blob = await leases.acquire("blob:" + "1" * 64)
    intent = Intent(bucket="b", key="k", digest="1" * 64)
    assert await leases.acquire(*intent.locks(), intent=intent) is None
    assert await redis.keys(keys.lock("entry*")) == []
    assert await redis.hlen(keys.intents("b")) == 0 and await redis.scard(keys.holders("1" * 64)) == 0
    await blob.release()
    lease = await leases.acquire(*intent.locks(), intent=intent)
    assert lease is not None and await lease.renew()
    await lease.settle()
    assert await redis.keys(keys.lock("*")) == [] and await redis.hlen(keys.intents("b")) == 0


async def test_index_counts_references_and_lists_in_byte_order(index, redis, keys):
    await redis.set(keys.ready, "g")
    for key in ["b", "B", "a/b", "a-b", "a.b", "a_b", "a"]:
        await index.put(entry(key, digest="1" * 64))
    await index.put(entry("z", digest="2" * 64, bucket="other"))
    page, more = await index.page("b", "", None, 100)
    assert [item.key for item in page] == sorted(["b", "B", "a/b", "a-b", "a.b", "a_b", "a"]) and not more
    page, more = await index.page("b", "a", "a-b", 2)
    assert [item.key for item in page] == ["a.b", "a/b"] and more
    assert await index.buckets() == ["b", "other"]
    assert await index.referenced(["1" * 64, "3" * 64]) == {"1" * 64}
    assert not await index.unreferenced("1" * 64)
    for key in ["b", "B", "a/b", "a-b", "a.b", "a_b", "a"]:
        await index.remove("b", key)
    assert await index.unreferenced("1" * 64)
    assert await index.buckets() == ["other"]


async def test_replacing_an_entry_moves_its_reference(index, redis, keys):
    await redis.set(keys.ready, "g")
    await index.put(entry("k", digest="1" * 64))
    await index.put(entry("k", digest="2" * 64))
    assert await index.unreferenced("1" * 64)
    assert not await index.unreferenced("2" * 64)


async def test_nothing_counts_as_unreferenced_while_the_index_is_incomplete(index):
    assert not await index.unreferenced("9" * 64)
    assert await index.referenced(["9" * 64]) is None


async def test_rebuild_loads_the_volume_and_drops_entries_deleted_meanwhile(index, redis, keys):
    store = index.entries
    for number in range(2500):
        store.put(entry(f"k{number:05}", digest=f"{number % 7:064x}"))
    real_exists = store.exists

    def deleted_during_rebuild(item: Entry) -> bool:
        if item.key == "k00042":
            store.delete(item.bucket, item.key)
        return real_exists(item)

    store.exists = deleted_during_rebuild
    page, _ = await index.page("b", "", None, 10000)
    assert len(page) == 2499 and "k00042" not in {item.key for item in page}
    assert await redis.get(keys.ready)
    digests = [f"{number:064x}" for number in range(9)]
    assert await index.referenced(digests) == set(digests[:7])


async def test_rebuild_does_not_overwrite_a_newer_entry(index, redis, keys):
    index.entries.put(entry("k", digest="1" * 64))
    await index.put(entry("k", digest="2" * 64))  # committed to Redis after the rebuild read the volume
    await index.rebuild()
    page, _ = await index.page("b", "", None, 10)
    assert [item.digest for item in page] == ["2" * 64]
