"""Damage on the data volume: what `fsck` finds and repairs, corrupt blobs cut off from whole
downloads, and planted symlinks that must not lead uploads or downloads out of the data directory.

Every damaged data directory starts from real uploads through the app. fsck runs on a fake Redis
that shares the app's server, as a separate `files-service fsck` shares the service's Redis.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import fakeredis
import httpx
import pytest
from apihelpers import b3, blob_files, download, send, start, start_session, upload
from clirun import run_cli
from conftest import BASE_URL
from starlette.applications import Starlette

from service.config import Settings
from service.core.errors import CorruptBlob
from service.ops.fsck import fsck
from service.services import Services
from service.storage.durable import TEMPORARY, temporary_path

pytestmark = pytest.mark.anyio

GRACE = 3600.0
LONG_AGO = time.time() - 2 * 86400
DAMAGED = b"the content that will be damaged " * 10
KEEP = b"content that stays whole"
KINDS = ("corrupt blob", "missing blob", "unreferenced blob", "stray partial", "stray temporary", "unreadable entry")
LINE = re.compile(rf"^(found|repaired)\s+({'|'.join(KINDS)})\s+(\S+)")


def app_client(app: Starlette, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL)


@dataclass
class Stock:
    """A data directory holding b/damaged and b/keep, uploaded through `client`."""

    settings: Settings
    redis_server: fakeredis.FakeServer
    app: Starlette
    client: httpx.AsyncClient

    @property
    def services(self) -> Services:
        return self.app.state.services

    @property
    def data(self) -> Path:
        return self.settings.data_dir.resolve()

    def blob(self, content: bytes = DAMAGED) -> Path:
        return self.services.blobs.path(b3(content))

    def entry(self, key: str = "damaged") -> Path:
        return self.services.entries.path("b", key)

    async def fsck(self, repair: bool) -> tuple[int, list[str]]:
        client = fakeredis.FakeAsyncRedis(server=self.redis_server, decode_responses=True)
        lines: list[str] = []
        try:
            code = await fsck(Services.build(self.settings, client), repair, lines.append)
        finally:
            await client.aclose()
        return code, lines


@pytest.fixture
async def stock(settings, redis_server, make_app) -> AsyncIterator[Stock]:
    settings = settings.model_copy(update={"blob_grace_seconds": GRACE})
    app = make_app(blob_grace_seconds=GRACE)
    async with app_client(app, raise_app_exceptions=False) as client:
        await upload(client, "b", "damaged", DAMAGED)
        await upload(client, "b", "keep", KEEP)
        yield Stock(settings, redis_server, app, client)


def findings(lines: list[str]) -> set[tuple[str, str, str]]:
    """(state, kind, path) of every finding line; the summary line is left out."""
    return {match.groups() for line in lines if (match := LINE.match(line))}


def replace_file(path: Path, content: bytes) -> None:
    """Give `path` new content through a new file, so no other link to the old one is touched."""
    temporary = path.with_name(f"planted-{secrets.token_hex(4)}")
    temporary.write_bytes(content)
    os.replace(temporary, path)


def plant_file(path: Path, content: bytes, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def altered(content: bytes) -> bytes:
    """The same number of bytes, not the same content."""
    return bytes([content[0] ^ 0xFF]) + content[1:]


# --- the kinds of damage -----------------------------------------------------------------------


@dataclass
class Planted:
    found: list[tuple[str, Path]]  # (kind, path) fsck must report
    spared: list[Path] = field(default_factory=list)  # look alike, but are fine: must stay, unreported
    quarantined: bytes | None = None  # what --repair must move to data/quarantine/


async def corrupt_blob(stock: Stock) -> Planted:
    replace_file(stock.blob(), altered(DAMAGED))
    return Planted([("corrupt blob", stock.blob()), ("missing blob", stock.entry())], quarantined=altered(DAMAGED))


async def missing_blob(stock: Stock) -> Planted:
    stock.blob().unlink()
    return Planted([("missing blob", stock.entry())])


async def unreferenced_blob(stock: Stock) -> Planted:
    old = plant_file(stock.blob(b"nobody needs this"), b"nobody needs this", LONG_AGO)
    young = plant_file(stock.blob(b"just placed"), b"just placed")
    return Planted([("unreferenced blob", old)], spared=[young])


async def stray_partial(stock: Stock) -> Planted:
    session_id = await start_session(stock.client, "b", "in-progress", 10)
    assert (await send(stock.client, session_id, b"01234", offset=0)).status_code == 200
    stray = plant_file(stock.data / "partial" / secrets.token_hex(16), b"left behind", LONG_AGO)
    # Unknown to Redis but written within a lock lease: a writer may still hold it (service/ops/fsck.py).
    fresh = plant_file(stock.data / "partial" / secrets.token_hex(16), b"just written")
    return Planted([("stray partial", stray)], spared=[stock.data / "partial" / session_id, fresh])


def stray_temporary(area: str) -> Callable[[Stock], Awaitable[Planted]]:
    async def plant(stock: Stock) -> Planted:
        directory = (stock.blob() if area == "blobs" else stock.entry()).parent
        old = plant_file(temporary_path(directory / "x"), b"interrupted")
        # Age is the inode's ctime (service.storage.durable.stale_temporaries), which no call can set back:
        # let a lease pass.
        deadline = time.monotonic() + stock.settings.lock_lease_seconds + 10
        while os.lstat(old).st_ctime >= time.time() - stock.settings.lock_lease_seconds:
            assert time.monotonic() < deadline, "the clock did not move past a lease"
            await asyncio.sleep(0.05)
        young = plant_file(temporary_path(directory / "y"), b"being written right now")
        return Planted([("stray temporary", old)], spared=[young])

    return plant


async def unreadable_entry(stock: Stock) -> Planted:
    path = plant_file(stock.entry().parent.parent / "zz" / f"{'f' * 64}.json", b'{"bucket": "b", "key":')
    return Planted([("unreadable entry", path)])


@dataclass(frozen=True)
class Damage:
    id: str
    plant: Callable[[Stock], Awaitable[Planted]]
    repairable: bool = True


DAMAGES = [
    Damage("corrupt-blob", corrupt_blob),
    Damage("missing-blob", missing_blob),
    Damage("unreferenced-blob", unreferenced_blob),
    Damage("stray-partial", stray_partial),
    Damage("stray-temporary-in-blobs", stray_temporary("blobs")),
    Damage("stray-temporary-in-entries", stray_temporary("entries")),
    # Reported only: a person should look at it (service/ops/fsck.py).
    Damage("unreadable-entry", unreadable_entry, repairable=False),
]


def quarantine(stock: Stock) -> list[bytes]:
    directory = stock.data / "quarantine"
    return [path.read_bytes() for path in directory.iterdir()] if directory.exists() else []


async def test_a_clean_data_directory_passes(stock):
    code, lines = await stock.fsck(repair=False)
    assert (code, findings(lines)) == (0, set()), lines


@pytest.mark.parametrize("damage", DAMAGES, ids=[damage.id for damage in DAMAGES])
async def test_fsck_reports_and_repairs(stock, damage):
    planted = await damage.plant(stock)
    expected = {(kind, str(path)) for kind, path in planted.found}

    code, lines = await stock.fsck(repair=False)
    assert code == 1, lines
    assert findings(lines) == {("found", kind, path) for kind, path in expected}, lines
    assert all(path.exists() for _, path in planted.found), "a report-only run changed things"

    code, lines = await stock.fsck(repair=True)
    state = "repaired" if damage.repairable else "found"
    assert findings(lines) == {(state, kind, path) for kind, path in expected}, lines
    assert code == (0 if damage.repairable else 1), lines

    assert all(path.exists() != damage.repairable for _, path in planted.found)
    assert all(path.exists() for path in planted.spared)
    assert quarantine(stock) == ([planted.quarantined] if planted.quarantined else [])
    assert (await stock.fsck(repair=False))[0] == (0 if damage.repairable else 1)
    await assert_only_whole_files_listed(stock, damaged_gone=any(kind == "missing blob" for kind, _ in planted.found))


async def test_the_blob_of_an_unreadable_entry_survives_repair(stock, redis):
    """fsck leaves an unreadable entry for a person to look at; the content it names must still be there then."""
    os.utime(stock.blob(), (LONG_AGO, LONG_AGO))
    replace_file(stock.entry(), b'{"bucket": "b", "key":')
    await redis.flushall()  # as the CLI's own embedded Redis: no index that still counts the entry
    code, lines = await stock.fsck(repair=True)
    assert code == 1
    assert ("found", "unreadable entry", str(stock.entry())) in findings(lines), lines
    assert stock.blob().read_bytes() == DAMAGED


async def assert_only_whole_files_listed(stock: Stock, damaged_gone: bool) -> None:
    listed = [item["key"] for item in (await stock.client.get("/v1/files/b")).json()["data"]]
    assert listed == (["keep"] if damaged_gone else ["damaged", "keep"])
    assert (await stock.client.get("/v1/files/b/damaged")).status_code == (404 if damaged_gone else 200)
    assert (await download(stock.client, "b", "keep")).content == KEEP


# Damage that can be planted side by side (a missing blob would remove the corrupt one), and that the
# CLI sees alike (its embedded Redis knows no session, so a live session's partial is stray to it).
AT_ONCE = {"corrupt-blob", "unreferenced-blob", "stray-temporary-in-blobs", "stray-temporary-in-entries"}


async def test_several_kinds_of_damage_at_once_through_the_cli(stock):
    """The real command, on its embedded Redis (no FILES_REDIS_URL)."""
    planted = [await damage.plant(stock) for damage in DAMAGES if damage.id in AT_ONCE]
    # The stock's lease, which its planted temporaries have outlived.
    env = {"FILES_DATA_DIR": str(stock.data), "FILES_LOCK_LEASE_SECONDS": str(stock.settings.lock_lease_seconds)}

    found = run_cli("fsck", env=env)
    assert found.returncode == 1, found.stdout + found.stderr
    for kind, path in (item for damage in planted for item in damage.found):
        assert ("found", kind, str(path)) in findings(found.stdout.splitlines()), found.stdout

    repaired = run_cli("fsck", "--repair", env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    # A lease long enough that the young temporaries, if the repair left them, are still young now.
    again = run_cli("fsck", env={**env, "FILES_LOCK_LEASE_SECONDS": "30"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 problem(s) found" in again.stdout
    # Young temporaries are left out: three runs of the command outlast the lease that kept them young.
    spared = [path for damage in planted for path in damage.spared if not TEMPORARY.fullmatch(path.name)]
    assert spared and all(path.exists() for path in spared)
    assert quarantine(stock) == [altered(DAMAGED)]


# --- a corrupt blob is not served as whole -----------------------------------------------------

MiB = 1024 * 1024


async def whole_download(client: httpx.AsyncClient, size: int) -> bytes | None:
    """The body of GET b/damaged when it came back complete with a 200 and no error; else None."""
    try:
        response = await download(client, "b", "damaged")
    except CorruptBlob:  # what the app raised, once the response had started
        return None
    if response.status_code != 200 or len(response.content) != size:
        return None
    return response.content


def overwrite_in_place(path: Path, content: bytes) -> None:
    """Damage the very file, as a stray write to it would: same inode, same size."""
    with open(path, "r+b") as file:
        file.write(content)


@pytest.mark.parametrize("size", [100, 2 * MiB + 5], ids=["one-read", "many-reads"])
@pytest.mark.parametrize("raise_app_exceptions", [True, False], ids=["app-errors-raised", "as-a-client-sees-it"])
@pytest.mark.parametrize("damage", [replace_file, overwrite_in_place], ids=["replaced", "overwritten"])
@pytest.mark.parametrize("verified", [False, True], ids=["never-downloaded", "downloaded-whole-before"])
async def test_a_blob_corrupted_after_upload_is_cut_off(make_app, caplog, size, raise_app_exceptions, damage, verified):
    """Also once a whole download has verified the blob and the next ones no longer hash it: any
    damage done through the filesystem since changes the blob's stamp, and it is hashed again."""
    content = os.urandom(size)
    app = make_app()
    async with app_client(app, raise_app_exceptions) as client:
        await upload(client, "b", "damaged", content)
        if verified:
            assert await whole_download(client, size) == content
            assert await whole_download(client, size) == content
        damage(app.state.services.blobs.path(b3(content)), altered(content))
        assert await whole_download(client, size) is None
        assert await whole_download(client, size) is None  # and it stays cut off
    assert "corrupt" in caplog.text


async def test_a_blob_verified_once_is_sent_unhashed_while_it_is_unchanged(make_app, monkeypatch):
    """Whole downloads hash a blob until one finds it right; the next ones send it as it is read,
    checking only that it is still the same file (the blob store's stamp)."""
    content = os.urandom(3 * MiB)
    app = make_app()
    blobs = app.state.services.blobs
    hashed: list[bool] = []
    read = blobs.read

    def watched_read(digest, first, length, observe=None):
        hashed.append(observe is not None)
        return read(digest, first, length, observe)

    monkeypatch.setattr(blobs, "read", watched_read)
    async with app_client(app) as client:
        await upload(client, "b", "k", content)
        for _ in range(3):
            response = await download(client, "b", "k")
            assert response.status_code == 200 and response.content == content
        os.utime(blobs.path(b3(content)))  # what placing the same content again does: a new stamp
        assert (await download(client, "b", "k")).content == content
    assert hashed == [True, False, False, True]


@pytest.mark.parametrize("touch", ["same-content-placed-again", "damaged-in-place"])
async def test_a_verified_blob_touched_while_it_is_sent_is_hashed_again(make_app, monkeypatch, touch):
    """A blob sent unhashed (verified before) whose stamp changes during the download: placing the
    same content again (its times refreshed) must not break the download, damage must cut it off."""
    content = os.urandom(2 * MiB + 5)  # two reads: the touch falls between them
    app = make_app()
    blobs = app.state.services.blobs
    path = blobs.path(b3(content))
    read = blobs.read
    touches = 0  # how many unhashed sends to touch the blob in

    async def touched_read(digest, first, length, observe=None):
        nonlocal touches
        async for data in read(digest, first, length, observe):
            yield data
            if touches and observe is None:
                touches -= 1
                if touch == "same-content-placed-again":
                    os.utime(path)
                else:  # the last byte, which the send has not read yet
                    with open(path, "r+b") as file:
                        file.seek(len(content) - 1)
                        file.write(bytes([content[-1] ^ 0xFF]))

    monkeypatch.setattr(blobs, "read", touched_read)
    async with app_client(app, raise_app_exceptions=False) as client:
        await upload(client, "b", "damaged", content)
        assert await whole_download(client, len(content)) == content  # hashed, now verified
        touches = 1
        outcome = await whole_download(client, len(content))
        if touch == "same-content-placed-again":
            assert outcome == content
            assert await whole_download(client, len(content)) == content
        else:
            assert outcome is None
            assert await whole_download(client, len(content)) is None


@pytest.mark.parametrize("damage", ["removed", "cut short"])
async def test_lost_partial_data_restarts_the_session_instead_of_filling_in_zeros(client, settings, damage):
    """The bytes a session acknowledged vanish from the volume: the next chunk gets 409 at offset 0
    (nothing is written past a gap), and the upload sent again from 0 stores the true content."""
    content = os.urandom(3000)
    session_id = await start_session(client, "b", "k", len(content))
    assert (await send(client, session_id, content[:2000], offset=0)).json()["offset"] == 2000
    partial = settings.data_dir / "partial" / session_id
    if damage == "removed":
        partial.unlink()
    else:
        partial.write_bytes(content[:500])
    refused = await send(client, session_id, content[2000:], offset=2000)
    assert refused.status_code == 409 and refused.json()["offset"] == 0, refused.text
    assert refused.headers["upload-offset"] == "0"
    assert (await client.get(f"/v1/files/session:{session_id}")).json()["offset"] == 0
    assert (await send(client, session_id, b"", offset=0)).json()["offset"] == 0  # nothing is kept either
    done = await send(client, session_id, content, offset=0)
    assert done.status_code == 200 and done.json()["digest"] == f"blake3:{b3(content)}"
    assert (await download(client, "b", "k")).content == content


async def test_a_range_of_a_corrupt_blob_is_served_as_it_is(make_app):
    """Only whole downloads are verified: a range cannot be checked without reading everything."""
    app = make_app()
    async with app_client(app) as client:
        await upload(client, "b", "damaged", DAMAGED)
        replace_file(app.state.services.blobs.path(b3(DAMAGED)), altered(DAMAGED))
        response = await download(client, "b", "damaged", Range="bytes=0-9")
    assert response.status_code == 206
    assert response.content == altered(DAMAGED)[:10]


# --- planted symlinks --------------------------------------------------------------------------


def planted_location(data: Path, where: str) -> Path:
    """The directory a symlink replaces: the bucket's entries, or a shard of DAMAGED's blob."""
    digest = b3(DAMAGED)
    return {
        "entries-bucket": data / "entries" / "b",
        "blob-shard": data / "blobs" / digest[:2],
        "blob-subshard": data / "blobs" / digest[:2] / digest[2:4],
    }[where]


def plant_symlink(location: Path, outside: Path) -> None:
    """Replace `location` by a symlink to `outside`, moving what was there to `outside`."""
    if location.exists():
        os.rename(location, outside)
    else:
        location.parent.mkdir(parents=True, exist_ok=True)
        outside.mkdir()
    location.symlink_to(outside, target_is_directory=True)


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def assert_server_error(response: httpx.Response) -> None:
    assert 500 <= response.status_code < 600, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"] and "Traceback" not in response.text
    assert response.json()["code"] == "data_directory_link", "the detail should say what is wrong"


WHERE = ["entries-bucket", "blob-shard", "blob-subshard"]


@pytest.mark.parametrize("where", WHERE)
async def test_an_upload_does_not_write_through_a_planted_symlink(make_app, settings, tmp_path, where):
    data = settings.data_dir.resolve()
    app = make_app()
    outside = tmp_path / "outside"
    plant_symlink(planted_location(data, where), outside)
    async with app_client(app, raise_app_exceptions=False) as client:
        response = await start(client, "b", "damaged", len(DAMAGED))
        if response.status_code == 200:
            response = await send(client, response.json()["id"], DAMAGED, offset=0)
        assert_server_error(response)
        assert (await client.get("/v1/files/b/damaged")).status_code >= 400
    assert files_under(outside) == []
    assert blob_files(data) == [], "a blob was left without its entry"


@pytest.mark.parametrize("where", WHERE)
async def test_a_download_does_not_read_through_a_planted_symlink(stock, tmp_path, where):
    plant_symlink(planted_location(stock.data, where), tmp_path / "outside")
    response = await download(stock.client, "b", "damaged")
    assert_server_error(response)
    assert DAMAGED not in response.content
    if where == "entries-bucket":
        assert_server_error(await stock.client.get("/v1/files/b/damaged"))
