"""Where the digest comes from: hashed as the bytes stream in when one process saw them all,
else by reading the finished file once; the result is the same either way."""

from __future__ import annotations

import hashlib
import os

import pytest
from apihelpers import b3, send, start_session, upload
from conftest import http_client

import service.storage.staging

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


@pytest.fixture
def file_hashes(monkeypatch) -> list[str]:
    """Counts the times a finished upload is read back to hash it."""
    calls: list[str] = []
    real = service.storage.staging.hash_file

    def counting(path, sha256=False, md5=False):
        calls.append(str(path))
        return real(path, sha256, md5)

    monkeypatch.setattr(service.storage.staging, "hash_file", counting)
    return calls


async def test_chunks_that_all_reach_one_process_are_hashed_as_they_arrive(client, file_hashes):
    content = os.urandom(3 * MiB + 12345)
    done = await upload(client, "h", "chunked", content, chunk=MiB + 7)
    assert done["digest"] == f"blake3:{b3(content)}"
    assert file_hashes == []


async def test_a_sha256_digest_is_checked_from_the_streamed_hash_too(client, file_hashes):
    content = os.urandom(2 * MiB + 3)
    digest = f"sha256:{hashlib.sha256(content).hexdigest()}"
    done = await upload(client, "h", "sha", content, chunk=MiB, digest=digest)
    assert done["bytes"] == len(content) and file_hashes == []


async def test_chunks_spread_over_processes_are_hashed_from_the_file_once(make_app, file_hashes):
    content = os.urandom(2 * MiB + 99)
    async with http_client(make_app()) as first, http_client(make_app()) as second:
        session = await start_session(first, "h", "spread", len(content))
        assert (await send(first, session, content[:MiB], offset=0)).status_code == 200
        assert (await send(second, session, content[MiB : 2 * MiB], offset=MiB)).status_code == 200
        done = await send(first, session, content[2 * MiB :], offset=2 * MiB)
    assert done.status_code == 200, done.text
    assert done.json()["digest"] == f"blake3:{b3(content)}"
    assert len(file_hashes) == 1


async def test_a_chunk_refused_past_the_size_does_not_leave_a_stale_hash_behind(client, file_hashes):
    content = os.urandom(MiB + 10)
    session = await start_session(client, "h", "refused", len(content))
    assert (await send(client, session, content[:MiB], offset=0)).status_code == 200
    assert (await send(client, session, content[MiB:] + b"extra", offset=MiB)).status_code == 413
    done = await send(client, session, content[MiB:], offset=MiB)
    assert done.status_code == 200, done.text
    assert done.json()["digest"] == f"blake3:{b3(content)}"
