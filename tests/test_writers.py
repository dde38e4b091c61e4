"""Small uploads stored by writer processes (FILES_WRITER_PROCESSES, service/storage/writers.py).

The other in-process tests run the commit's disk work on threads (their settings say 0 writer
processes); a real `files-service serve` uses processes, and the integration tests (crash
points among them: tests/integration/test_commit_crashes.py) go through them. Here: what a
client sees of an app whose small commits go to writer processes, from the first commit that
starts them to a writer that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from apihelpers import b3, blob_files, blob_path, download, entry_files, send, session_path, start, upload
from conftest import BASE_URL
from starlette.applications import Starlette

from service.storage.writers import MOST, WriterProcesses

pytestmark = pytest.mark.anyio

DEADLINE = 30.0


@pytest.fixture
async def writers_app(make_app) -> AsyncIterator[Starlette]:
    """An app with one writer process, which the test lets go at its end (an ASGI transport runs no lifespan)."""
    app = make_app(writer_processes=1)
    try:
        yield app
    finally:
        await writers_of(app).close()


def writers_of(app: Starlette) -> WriterProcesses:
    writers = app.state.services.writers
    assert isinstance(writers, WriterProcesses)
    return writers


@pytest.fixture
async def client(writers_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=writers_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


def writer_pids() -> set[int]:
    """The writer processes of this test process, not yet exited."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            children += (task / "children").read_text().split()
    pids = set()
    for child in children:
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            status = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if b"service.storage.writers" in Path(f"/proc/{child}/cmdline").read_bytes() and status != "Z":
                pids.add(int(child))
    return pids


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_the_first_small_commit_starts_a_writer_that_stores_the_file(client, settings) -> None:
    before = writer_pids()
    content = os.urandom(5000)
    info = await upload(client, "b", "k", content, metadata={"origin": "writer"})
    assert writer_pids() - before, "a writer process should have been started by the commit"
    assert info["digest"] == f"blake3:{b3(content)}" and info["metadata"] == {"origin": "writer"}
    assert blob_path(settings.data_dir, b3(content)).read_bytes() == content
    assert len(entry_files(settings.data_dir)) == 1
    assert (await download(client, "b", "k")).content == content


async def test_content_larger_than_a_writer_takes_is_stored_on_a_thread(client, settings) -> None:
    """Beyond MOST bytes the message's copies would cost more than a thread's handing over of the GIL."""
    before = writer_pids()
    content = os.urandom(MOST + 1)
    await upload(client, "b", "larger", content)
    assert writer_pids() == before, "no writer process should have been started"
    assert blob_path(settings.data_dir, b3(content)).read_bytes() == content
    assert (await download(client, "b", "larger")).content == content


async def test_the_same_content_through_a_writer_is_stored_once(client, settings) -> None:
    content = os.urandom(3000)
    for key in ("one", "two", "three"):
        await upload(client, "b", key, content)
    assert blob_files(settings.data_dir) == [blob_path(settings.data_dir, b3(content))]
    for key in ("one", "two", "three"):
        assert (await download(client, "b", key)).content == content
    assert (await client.delete("/v1/files/b/one")).status_code == 200
    assert (await download(client, "b", "two")).content == content


async def test_an_error_in_a_writer_reaches_the_client_as_in_a_thread(client, settings, tmp_path: Path) -> None:
    """A planted symlink where the bucket's entries go: the writer refuses to write through it, and the
    client gets the same answer as from a thread (500, `data_directory_link`); no blob is left behind."""
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = settings.data_dir / "entries" / "b"
    entries.parent.mkdir(parents=True, exist_ok=True)
    entries.symlink_to(outside, target_is_directory=True)
    response = await start(client, "b", "k", 100)
    response = await send(client, response.json()["id"], os.urandom(100), offset=0)
    assert response.status_code == 500, response.text
    assert response.json()["code"] == "data_directory_link"
    assert list(outside.iterdir()) == []
    assert blob_files(settings.data_dir) == [], "a blob was left without its entry"


async def test_a_writer_that_dies_costs_at_most_one_request(client, settings) -> None:
    """A writer killed (out of memory, say) between commits: the next upload is stored by a new one, or,
    should the service learn of the death only once it handed that upload over, answered 503 with
    every byte kept, and completed by an empty request at the offset the session then reports."""
    await upload(client, "b", "first", os.urandom(100))
    (victim,) = writer_pids()
    os.kill(victim, signal.SIGKILL)
    await until(lambda: victim not in writer_pids(), "the writer to die")
    content = os.urandom(200)
    session_id = (await start(client, "b", "second", len(content))).json()["id"]
    response = await send(client, session_id, content, offset=0)
    if response.status_code == 503:
        assert response.json()["code"] == "unavailable"
        offset = (await client.get(session_path(session_id))).json()["offset"]
        response = await send(client, session_id, content[offset:], offset=offset)
    assert response.status_code == 200, response.text
    assert (await download(client, "b", "second")).content == content
    assert victim not in writer_pids()


async def test_writers_end_when_no_commit_came_for_a_while(client, writers_app) -> None:
    """A writer holds its memory only while small uploads come: it ends after `idle_seconds` without one,
    and the next small upload starts another."""
    writers_of(writers_app).idle_seconds = 0.2
    await upload(client, "b", "first", os.urandom(100))
    (first,) = writer_pids()
    await until(lambda: not writer_pids(), "the idle writer to end")
    content = os.urandom(100)
    await upload(client, "b", "second", content)
    assert writer_pids() and first not in writer_pids()
    assert (await download(client, "b", "second")).content == content
