"""The data volume: partial data of expired sessions is swept, and content is stored once."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from .harness import MiB, assert_content, b3, expect, files_under, wait_for


def test_expired_session_partial_data_is_swept(services, data_dir) -> None:
    # Both processes share Redis and the volume; only their session lifetimes differ.
    brief = services.start(name="brief", FILES_SESSION_TTL_SECONDS="2")
    lasting = services.start(name="lasting", FILES_SESSION_TTL_SECONDS="3600")
    content = os.urandom(MiB)
    doomed = brief.api.create("ttl", "doomed.bin", len(content))["id"]
    kept = lasting.api.create("ttl", "kept.bin", len(content))["id"]
    for process, session_id in ((brief, doomed), (lasting, kept)):
        assert process.api.chunk(session_id, content[:100_000], offset=0)["offset"] == 100_000
    doomed_partial, kept_partial = data_dir / "partial" / doomed, data_dir / "partial" / kept
    assert doomed_partial.stat().st_size == 100_000

    # No request from here on until the file is gone: the sweepers must do it on their own.
    wait_for(lambda: not doomed_partial.exists(), 20, "the expired session's partial file to be removed")

    assert kept_partial.stat().st_size == 100_000, "a live session's partial data must stay"
    expect(brief.api.session(doomed), 404)
    expect(lasting.api.session(doomed), 404)
    expect(brief.api.send(doomed, content[100_000:], offset=100_000), 404)
    assert lasting.api.chunk(kept, content[100_000:], offset=100_000)["digest"] == f"blake3:{b3(content)}"
    assert_content(brief.api.content("ttl", "kept.bin"), content)
    expect(brief.api.info("ttl", "doomed.bin"), 404)


def test_same_content_under_many_keys_is_stored_once(services, data_dir) -> None:
    a, b = services.start_many(2)
    content = os.urandom(MiB)
    digest = b3(content)
    names = [(f"bucket-{number % 4}", f"copies/{number:02d}.bin") for number in range(16)]

    def upload(number: int) -> dict:
        # Created on one process, the content sent to the other, all sixteen at once.
        creator, writer = (a, b) if number % 2 == 0 else (b, a)
        bucket, key = names[number]
        with creator.client() as client:
            session_id = client.create(bucket, key, len(content))["id"]
        with writer.client() as client:
            return client.chunk(session_id, content, offset=0)

    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(upload, range(len(names))))

    assert {result["digest"] for result in results} == {f"blake3:{digest}"}
    [blob] = files_under(data_dir / "blobs")
    assert (blob.name, blob.stat().st_size) == (digest, len(content))
    assert files_under(data_dir / "partial") == []
    for number, (bucket, key) in enumerate(names):
        assert_content((a, b)[number % 2].api.content(bucket, key), content)
    assert a.api.buckets() == sorted({bucket for bucket, _ in names})
    assert b.api.keys("bucket-1") == sorted(key for bucket, key in names if bucket == "bucket-1")

    *others, (last_bucket, last_key) = names
    for number, (bucket, key) in enumerate(others):
        assert expect((a, b)[number % 2].api.delete(bucket, key), 200).json()["key"] == key
    assert files_under(data_dir / "blobs") == [blob], "the blob must stay while one key refers to it"
    assert_content(b.api.content(last_bucket, last_key), content)
    expect(a.api.content(*others[0]), 404)

    expect(b.api.delete(last_bucket, last_key), 200)
    wait_for(lambda: not files_under(data_dir / "blobs"), 10, "the blob to be freed after its last key went")
    expect(a.api.content(last_bucket, last_key), 404)
    assert a.api.buckets() == []
