"""The data directory's lock: who may share it, and what fsck does when a service it cannot see holds it."""

from __future__ import annotations

import re

import fakeredis
import pytest

from service.http.app import create_app
from service.ops.dirlock import DataDirBusy, DataDirLock
from service.ops.fsck import Sessions, fsck
from service.services import Services


def test_exclusive_excludes_everyone_and_shared_admits_shared(tmp_path):
    shared = DataDirLock.try_acquire(tmp_path, exclusive=False)
    assert shared is not None
    other = DataDirLock.try_acquire(tmp_path, exclusive=False)
    assert other is not None
    assert DataDirLock.try_acquire(tmp_path, exclusive=True) is None
    shared.release()
    other.release()
    other.release()  # a second release does nothing

    alone = DataDirLock.try_acquire(tmp_path, exclusive=True)
    assert alone is not None
    assert DataDirLock.try_acquire(tmp_path, exclusive=False) is None
    assert DataDirLock.try_acquire(tmp_path, exclusive=True) is None
    alone.release()
    assert DataDirLock.try_acquire(tmp_path, exclusive=True) is not None


@pytest.mark.anyio
async def test_a_second_embedded_service_refuses_the_directory_until_the_first_has_stopped(settings):
    first = create_app(settings)
    async with first.router.lifespan_context(first):
        with pytest.raises(DataDirBusy, match=re.escape(str(settings.data_dir.resolve()))):
            create_app(settings)
        shared = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
        with pytest.raises(DataDirBusy, match="holds the data directory"):
            create_app(shared)
    second = create_app(settings)  # the first let go of the directory as it stopped
    async with second.router.lifespan_context(second):
        assert second.state.services.settings.data_dir == settings.data_dir


@pytest.mark.anyio
@pytest.mark.parametrize("repair", [False, True])
async def test_partials_of_a_service_fsck_cannot_see_are_reported_and_kept(settings, repair):
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    services = Services.build(settings, client)
    partial = settings.data_dir / "partial" / ("a" * 32)
    partial.write_bytes(b"a live upload's first bytes")
    lines: list[str] = []

    code = await fsck(services, repair, lines.append, Sessions.HIDDEN)

    assert code == 0, lines
    assert re.match(rf"^skipped\s+unchecked partial\s+{re.escape(str(partial))}\s", lines[0]), lines
    assert lines[1] == "fsck: 0 problem(s) found, 0 repaired"
    assert "1 partial file(s) not checked" in lines[2] and "stop it" in lines[2]
    assert partial.read_bytes() == b"a live upload's first bytes"
    await client.aclose()
