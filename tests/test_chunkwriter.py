"""The body writer on its own: order, hashes, errors, and what abandoning leaves behind."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from apihelpers import b3

from service.core.chunkwriter import IN_FLIGHT, WRITE_SIZE, ChunkWriter
from service.core.digests import ContentHasher
from service.core.errors import StorageFull
from service.storage.staging import StagingArea

pytestmark = pytest.mark.anyio


def writer_for(area: StagingArea, name: str, offset: int = 0, hasher: ContentHasher | None = None) -> ChunkWriter:
    return ChunkWriter(functools.partial(area.open, name, offset), offset, hasher)


def pieces(content: bytes, sizes: list[int]) -> list[bytes]:
    """`content` cut into pieces of the given sizes, round and round, as a body arrives."""
    out, start, turn = [], 0, 0
    while start < len(content):
        size = sizes[turn % len(sizes)]
        out.append(content[start : start + size])
        start, turn = start + size, turn + 1
    return out


async def test_a_body_in_uneven_chunks_lands_in_order_and_hashes_as_a_whole(tmp_path):
    area = StagingArea(tmp_path)
    content = os.urandom(7 * WRITE_SIZE + 4321)
    hasher = ContentHasher(sha256=True)
    writer = writer_for(area, "s", hasher=hasher)
    for piece in pieces(content, [65536, 1, 300_000, WRITE_SIZE + 3]):
        await writer.add(piece)
    await writer.drain(close=True)
    assert writer.flushed == writer.received == len(content)
    assert writer.file.closed
    assert area.path("s").read_bytes() == content
    assert hasher.digests().blake3 == b3(content)


@pytest.mark.parametrize("size", [1000, 300 * 1024, WRITE_SIZE - 1])
async def test_a_small_body_held_in_memory_comes_back_whole_and_nothing_is_written(tmp_path, size):
    area = StagingArea(tmp_path)
    content = os.urandom(size)
    writer = writer_for(area, "s")
    for piece in pieces(content, [65536, 1, 100_000]):
        await writer.add(piece)
    assert writer.held() == content
    await writer.abandon()
    writer.close()
    assert not area.path("s").exists()


async def test_a_writer_resumes_at_its_offset_and_cuts_off_bytes_past_it(tmp_path):
    area = StagingArea(tmp_path)
    area.path("s").write_bytes(b"kept" + b"junk from a broken write")
    writer = writer_for(area, "s", offset=4)
    await writer.add(b" and more")
    await writer.drain(close=True)
    assert area.path("s").read_bytes() == b"kept and more"


@pytest.mark.parametrize("where", ["disk", "tmpfs"])
async def test_a_body_resumed_off_a_block_lands_whole_past_the_page_cache_or_through_it(tmp_path, where):
    """The first buffer runs to the file's next MiB and the last is short: both go through the page cache,
    those between past it (on a disk; tmpfs refuses that, and every write is cached there)."""
    if where == "tmpfs":
        if not Path("/dev/shm").is_dir():
            pytest.skip("no tmpfs at /dev/shm")
        tmp_path = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        area = StagingArea(tmp_path)
        kept = os.urandom(4321)
        area.path("s").write_bytes(kept)
        content = os.urandom(3 * WRITE_SIZE + 777)
        hasher = ContentHasher()
        writer = writer_for(area, "s", offset=len(kept), hasher=hasher)
        for piece in pieces(content, [65536, 1, 300_000, WRITE_SIZE + 3]):
            await writer.add(piece)
        await writer.drain(close=True)
        assert area.path("s").read_bytes() == kept + content
        assert hasher.digests().blake3 == b3(content)
    finally:
        if where == "tmpfs":
            shutil.rmtree(tmp_path)


async def test_an_empty_body_still_leaves_the_staging_file(tmp_path):
    area = StagingArea(tmp_path)
    writer = writer_for(area, "s", hasher=ContentHasher())
    await writer.drain(close=True)
    assert area.path("s").read_bytes() == b""


async def test_a_failed_write_raises_on_the_event_loop_and_abandon_returns(tmp_path):
    area = StagingArea(tmp_path)
    writer = writer_for(area, "s")

    def full(data, offset):
        raise StorageFull("no space left on device")

    await writer.add(b"x" * WRITE_SIZE)  # the first buffer opens the file
    await writer.drain()
    writer.file.write_at = full
    with pytest.raises(StorageFull):
        for _ in range(IN_FLIGHT + 2):
            await writer.add(b"y" * WRITE_SIZE)
        await writer.drain()
    await writer.abandon()
    await writer.truncate(WRITE_SIZE)
    writer.close()
    assert area.path("s").read_bytes() == b"x" * WRITE_SIZE


async def test_abandon_drops_what_is_queued_and_waits_for_the_buffer_being_written(tmp_path):
    area = StagingArea(tmp_path)
    writer = writer_for(area, "s")
    await writer.add(b"0" * WRITE_SIZE)
    await writer.drain()
    entered, release = threading.Event(), threading.Event()
    real = writer.file.write_at
    written = []

    def slow(data, offset):
        entered.set()
        release.wait(5)
        real(data, offset)
        written.append(offset)

    writer.file.write_at = slow
    for _ in range(IN_FLIGHT - 1):
        await writer.add(b"1" * WRITE_SIZE)  # the first held up in `slow`, the others queued behind it
    assert await asyncio.to_thread(entered.wait, 5)
    abandoning = asyncio.create_task(writer.abandon())
    await asyncio.sleep(0)  # one turn of the loop: abandon drops the queue, then waits for the write under way
    release.set()
    await abandoning
    assert written == [WRITE_SIZE]
    assert area.path("s").stat().st_size == 2 * WRITE_SIZE
    writer.close()


async def test_a_body_cut_off_while_its_writer_waits_for_room_keeps_every_byte_that_arrived(tmp_path):
    """Shutdown or a stalled client cancels the request where it waits; what came before is written."""
    area = StagingArea(tmp_path)
    writer = writer_for(area, "s")
    await writer.add(b"0" * WRITE_SIZE)
    await writer.drain()
    release = threading.Event()
    real = writer.file.write_at

    def held_up(data, offset):
        release.wait(5)
        real(data, offset)

    writer.file.write_at = held_up
    content = os.urandom((IN_FLIGHT + 2) * WRITE_SIZE)

    async def feed():
        for piece in pieces(content, [300_000]):
            await writer.add(piece)

    feeding = asyncio.create_task(feed())
    deadline = time.monotonic() + 5
    while writer._waiter is None:  # the writer waits for room: its writes are held up
        assert time.monotonic() < deadline, "the writer never waited"
        await asyncio.sleep(0.01)
    feeding.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await feeding
    await writer.drain(close=True)
    assert WRITE_SIZE < writer.flushed == writer.received < WRITE_SIZE + len(content)
    assert area.path("s").read_bytes() == b"0" * WRITE_SIZE + content[: writer.received - WRITE_SIZE]
