"""The service on a Redis Cluster: three primaries with a replica each, two service processes on
`redis+cluster://...`, the whole API and tus through them, ten thousand files listed across pages,
and a primary killed (SIGKILL) mid-upload while its replica takes over.

One cluster serves the module (each test has a Redis prefix of its own); the failover test comes
last, and leaves the killed node restarted as a replica.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from .harness import (
    ClusterServers,
    FilesClient,
    Launcher,
    ServiceProcess,
    assert_content,
    b3,
    expect,
    redis_server_binary,
    service_command,
    unavailable,
    wait_for,
)
from .resilient import ResilientUploader, check_every_file, finish

TUS = {"Tus-Resumable": "1.0.0"}
SEEDED = 10_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    if redis_server_binary() is None:
        unavailable("the cluster tests start their own redis-server nodes, and none is on PATH")
    launcher = Launcher(tmp_path_factory.mktemp("cluster"))
    try:
        yield launcher.cluster(primaries=3)
    finally:
        launcher.stop_all()


@pytest.fixture
def workers(cluster: ClusterServers, services) -> list[ServiceProcess]:
    return services.start_many(2, redis_url=cluster.url)


def keys_per_primary(cluster: ClusterServers, prefix: str) -> list[int]:
    counts = []
    for node in cluster.primaries():
        client = node.client()
        try:
            counts.append(sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000)))
        finally:
            client.close()
    return counts


def test_the_api_and_tus_through_two_workers(cluster: ClusterServers, workers, services, redis_prefix) -> None:
    first, second = (process.api for process in workers)
    first.upload("docs", "whole.txt", b"whole")
    # A session made on one worker and written through the other, a chunk at a time.
    created = first.create("docs", "chunks.bin", 12)
    second.chunk(created["id"], b"abcd", 0)
    assert first.offset(created["id"]) == 4
    first.chunk(created["id"], b"efgh", 4)
    done = second.chunk(created["id"], b"ijkl", 8)
    assert done["digest"] == f"blake3:{b3(b'abcdefghijkl')}"
    second.upload("docs", "whole.txt", b"replaced")
    # Content the service has already: stored once.
    assert second.upload("docs", "copy.bin", b"abcdefghijkl")["digest"] == done["digest"]
    second.upload("pictures", "a.png", b"\x89PNG", mime_type="image/png")
    cancelled = first.create("docs", "cancelled.bin", 3)
    assert second.http.delete(f"/v1/files/session:{cancelled['id']}").status_code == 204
    assert second.session(cancelled["id"]).status_code == 404

    tus_key = tus_upload(first, second, b"through tus, in two")
    for process in workers:
        assert process.api.buckets() == ["docs", "pictures", "uploads"]
        assert process.api.keys("docs") == ["chunks.bin", "copy.bin", "whole.txt"]
        assert_content(process.api.content("docs", "whole.txt"), b"replaced")
        assert_content(process.api.content("docs", "copy.bin"), b"abcdefghijkl")
        assert_content(process.api.content("uploads", tus_key), b"through tus, in two")
    assert first.delete("docs", "copy.bin").status_code == 200
    assert second.info("docs", "copy.bin").status_code == 404
    assert second.delete("pictures", "a.png").status_code == 200
    assert first.buckets() == ["docs", "uploads"]
    assert_content(second.content("docs", "chunks.bin"), b"abcdefghijkl")

    events = printed_events(services.environment(cluster.url), wanted=8)
    assert [(event["type"], event["bucket"], event["key"]) for event in events] == [
        ("file.created", "docs", "whole.txt"),
        ("file.created", "docs", "chunks.bin"),
        ("file.created", "docs", "whole.txt"),
        ("file.created", "docs", "copy.bin"),
        ("file.created", "pictures", "a.png"),
        ("file.created", "uploads", tus_key),
        ("file.deleted", "docs", "copy.bin"),
        ("file.deleted", "pictures", "a.png"),
    ]
    spread = keys_per_primary(cluster, redis_prefix)
    assert sum(1 for count in spread if count) >= 2, f"the keys of a few buckets and files all on one primary: {spread}"


def test_copies_uploads_that_need_no_bytes_and_tus_concatenation(workers) -> None:
    first, second = (process.api for process in workers)
    content = os.urandom(5000)
    first.upload("originals", "a.bin", content)
    copied = second.http.post("/v1/files/originals/a.bin:copy", json={"bucket": "copies", "key": "a.bin"})
    assert expect(copied, 200).json()["digest"] == f"blake3:{b3(content)}"
    known = {"bucket": "copies", "key": "b.bin", "mime_type": "application/octet-stream", "size": len(content)}
    known["digest"] = f"blake3:{b3(content)}"
    assert expect(first.http.post("/v1/files", json=known), 200).json()["deduplicated"] is True
    parts = []
    for writer, piece in ((first, b"first half, "), (second, b"second half")):
        headers = {**TUS, "Upload-Length": str(len(piece)), "Upload-Concat": "partial"}
        headers["Content-Type"] = "application/offset+octet-stream"
        parts.append(
            httpx.URL(expect(writer.http.post("/tus/", headers=headers, content=piece), 201).headers["location"]).path
        )
    final = {
        **TUS,
        "Upload-Concat": "final;" + " ".join(parts),
        "Upload-Metadata": f"key {base64.b64encode(b'joined').decode()}",
    }
    expect(second.http.post("/tus/", headers=final), 201)
    for process in workers:
        assert process.api.keys("copies") == ["a.bin", "b.bin"]
        assert_content(process.api.content("copies", "b.bin"), content)
        assert_content(process.api.content("uploads", "joined"), b"first half, second half")
    assert first.delete("originals", "a.bin").status_code == 200
    assert_content(second.content("copies", "a.bin"), content)


def tus_upload(creator: FilesClient, writer: FilesClient, content: bytes) -> str:
    """A tus upload created on one worker, written on the other in two PATCHes; returns its key."""
    name = base64.b64encode(b"tus.txt").decode()
    headers = {**TUS, "Upload-Length": str(len(content)), "Upload-Metadata": f"filename {name}"}
    location = expect(creator.http.post("/tus/", headers=headers), 201).headers["location"]
    path = httpx.URL(location).path
    half = len(content) // 2
    for offset, piece in ((0, content[:half]), (half, content[half:])):
        patch = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        expect(writer.http.patch(path, content=piece, headers=patch), 204)
    assert creator.http.head(path, headers=TUS).headers["upload-offset"] == str(len(content))
    return f"{path.rsplit('/', 1)[1]}/tus.txt"


def printed_events(env: dict[str, str], wanted: int) -> list[dict]:
    """What `files-service events` prints, asked again until `wanted` events are there (their order is final)."""
    found: list[dict] = []

    def enough() -> bool:
        nonlocal found
        done = subprocess.run(service_command("events"), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        found = [json.loads(line) for line in done.stdout.splitlines()]
        return len(found) >= wanted

    wait_for(enough, 60, f"{wanted} events")
    return found


def test_ten_thousand_files_listed_across_pages(workers) -> None:
    """Seeded through the service, small files of distinct contents (the commits of one content take
    turns on its blob), from threads taking turns between the workers."""
    names = [f"file-{number:05d}" for number in range(SEEDED)]

    def seed(batch: list[str], process: ServiceProcess) -> None:
        with process.client() as client:
            for name in batch:
                client.upload("many", name, name.encode())

    batches = [names[start::8] for start in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(seed, batches, [workers[number % 2] for number in range(8)]))

    listed: list[str] = []
    after = None
    while True:
        params = {"limit": 1000, **({"after": after} if after else {})}
        page = expect(workers[len(listed) // 1000 % 2].api.http.get("/v1/files/many", params=params), 200).json()
        listed += [entry["key"] for entry in page["data"]]
        if not page["has_more"]:
            break
        after = listed[-1]
    assert listed == names


def test_openai_files_through_two_workers(workers) -> None:
    """The openai SDK: a file made through one worker, listed by purpose and read through the other."""
    made, read = (OpenAI(base_url=f"{process.base_url}/v1/openai/v1", api_key="unused") for process in workers)
    try:
        created = made.files.create(file=("notes.jsonl", b'{"a": 1}\n'), purpose="batch")
        made.files.create(file=("other.jsonl", b'{"b": 2}\n'), purpose="assistants")
        assert [file.id for file in read.files.list(purpose="batch")] == [created.id]
        assert read.files.content(created.id).read() == b'{"a": 1}\n'
    finally:
        made.close()
        read.close()


def test_a_primary_killed_mid_upload(cluster: ClusterServers, workers, tmp_path: Path) -> None:
    """Every upload completes (clients resume from the offset reported), nothing is lost; the requests
    in flight while the slot's primary was gone fail with 503 only."""
    uploaders = [
        ResilientUploader(workers, f"client-{n}", count=6, size=512 * 1024 + n, chunk=32 * 1024).start()
        for n in range(4)
    ]
    wait_for(lambda: sum(uploader.acknowledged for uploader in uploaders) >= 8, 60, "uploads to be under way")
    victim = cluster.primaries()[0]
    replica = cluster.replica_of(victim)
    victim.kill()
    assert all(uploader.running() for uploader in uploaders), "the uploads ended before the primary died"
    wait_for(lambda: cluster.roles()[replica.port][0] == "master", 60, "the replica to take over")
    wait_for(cluster.healthy, 60, "every slot served again")
    promoted_at = time.monotonic()

    finish(uploaders)
    attempts = [attempt for uploader in uploaders for attempt in uploader.attempts]
    assert {attempt.status for attempt in attempts} <= {200, 404, 409, 503}, attempts
    assert {attempt.code for attempt in attempts if attempt.status == 503} <= {"unavailable"}
    assert all(attempt.began < promoted_at for attempt in attempts if attempt.status == 503), attempts
    check_every_file(uploaders, workers)
    for process in workers:
        process.check_alive()
    victim.start()  # back as a replica of the node that took over, for whoever runs after
    wait_for(cluster.in_sync, 60, "the restarted node to hold a copy again")


def test_every_worker_still_serves_after_the_cluster_changed(workers) -> None:
    for number, process in enumerate(workers):
        content = os.urandom(1000 + number)
        process.api.upload("after", f"k{number}", content)
        assert_content(workers[1 - number].api.content("after", f"k{number}"), content)
