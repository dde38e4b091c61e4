"""The contract's promises with every byte in an object store (FILES_STORAGE_URL), through real
`files-service serve` processes on a moto S3 server: workers that share no directory (each its own
FILES_DATA_DIR), kill -9 mid-chunk, Redis emptied, deduplication, the sweeper, a store that goes out
of reach and comes back, and the one-line refusals at start."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from s3server import CREDENTIALS, S3Server
from tcpproxy import TcpProxy

from service.ops.dirlock import LOCK_FILE

from .conftest import SHARED, Services
from .harness import (
    ManagedProcess,
    MiB,
    ServiceProcess,
    UnexpectedStatus,
    assert_content,
    b3,
    free_port,
    pieces,
    resume,
    service_command,
    streaming_second_chunk,
    wait_for,
)

LEASE_SECONDS = 2  # FILES_LOCK_LEASE_SECONDS of the harness


class Store:
    """A bucket of the moto server, and the service processes that keep their files in it."""

    def __init__(self, services: Services, s3_server: S3Server, tmp_path: Path) -> None:
        self.services = services
        self.server = s3_server
        self.tmp_path = tmp_path
        self.bucket = s3_server.new_bucket()
        self.prefix = "files/"
        self.client = s3_server.client()

    def environment(self, endpoint: str | None = None, redis_url: str | None = SHARED, **env: str) -> dict[str, str]:
        return self.services.environment(
            redis_url,
            FILES_STORAGE_URL=f"s3://{self.bucket}/{self.prefix.rstrip('/')}",
            FILES_S3_ENDPOINT_URL=endpoint or self.server.url,
            **CREDENTIALS,
            **env,
        )

    def start(
        self, name: str, endpoint: str | None = None, redis_url: str | None = SHARED, **env: str
    ) -> ServiceProcess:
        """A worker with a data directory of its own, shared with no other."""
        environment = self.environment(endpoint, redis_url, **env)
        environment["FILES_DATA_DIR"] = str(self.tmp_path / f"volume-{name}")
        return self.services.launcher.services(1, environment, name=name)[0]

    def objects(self, under: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + under)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def uploads(self) -> list[str]:
        return [upload["Key"] for upload in self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])]


@pytest.fixture
def store(services: Services, s3_server: S3Server, tmp_path: Path) -> Store:
    return Store(services, s3_server, tmp_path)


def files_on(volume: Path) -> list[str]:
    """What a worker wrote to its data directory but its lock file: nothing of the uploads should be there."""
    return [path.name for path in volume.rglob("*") if path.is_file() and path.name != LOCK_FILE]


def test_two_workers_with_no_shared_directory_take_alternate_chunks(store: Store) -> None:
    a, b = store.start("a"), store.start("b")
    content = os.urandom(13 * MiB + 12345)
    session_id = a.api.create("shared", "alternate.bin", len(content))["id"]
    offset, result = 0, {}
    for number, piece in enumerate(pieces(content, 3 * MiB + 1)):  # parts and tails cross chunk ends
        writer = (a, b)[number % 2]
        result = writer.api.chunk(session_id, piece, offset=offset)
        offset += len(piece)
    assert result["digest"] == f"blake3:{b3(content)}"
    for process in (a, b):
        assert_content(process.api.content("shared", "alternate.bin"), content)
        assert process.api.keys("shared") == ["alternate.bin"]
    assert store.objects("blobs/") == [f"{store.prefix}blobs/{b3(content)}"]
    assert files_on(a.data_dir) == files_on(b.data_dir) == []


def test_kill_9_mid_chunk_then_resume_on_another_worker(store: Store) -> None:
    victim = store.start("victim")
    content = os.urandom(9 * MiB + 333)
    first_chunk = MiB + 17
    with streaming_second_chunk(victim, content, first_chunk, 30) as (session_id, upload, checkpoint):
        victim.kill()
        upload.stop()
    fresh = store.start("fresh")
    assert checkpoint <= fresh.api.offset(session_id) < len(content)
    done = resume(fresh, session_id, content, LEASE_SECONDS + 20)
    assert done["digest"] == f"blake3:{b3(content)}"
    assert_content(fresh.api.content("crash", "resumed.bin"), content)


def test_every_file_is_listed_again_within_a_minute_after_redis_is_emptied(store: Store, own_redis) -> None:
    a, b = store.start("a", redis_url=own_redis.url), store.start("b", redis_url=own_redis.url)
    files = {("alpha", "one.txt"): b"hello\n", ("alpha", "deep/two.bin"): os.urandom(6 * MiB + 1)}
    files[("beta", "three")] = os.urandom(1000)
    for turn, ((bucket, key), content) in enumerate(files.items()):
        (a, b)[turn % 2].api.upload(bucket, key, content, chunk_size=2 * MiB)
    expected = {"alpha": ["deep/two.bin", "one.txt"], "beta": ["three"]}
    assert a.api.listing() == expected
    own_redis.client().flushall()
    for process in (a, b):
        wait_for(
            lambda process=process: process.api.listing() == expected,
            60,
            f"{process.name} to list every file again after Redis was emptied",
            ignore=(UnexpectedStatus, httpx.TransportError),
        )
        for (bucket, key), content in files.items():
            assert_content(process.api.content(bucket, key), content)


def test_the_same_content_under_many_keys_is_stored_once(store: Store) -> None:
    a, b = store.start("a"), store.start("b")
    content = os.urandom(6 * MiB + 7)
    names = [("one", f"copy-{number}") for number in range(4)] + [("two", "copy")]
    for turn, (bucket, key) in enumerate(names):
        (a, b)[turn % 2].api.upload(bucket, key, content, chunk_size=4 * MiB)
    assert store.objects("blobs/") == [f"{store.prefix}blobs/{b3(content)}"]
    assert len(store.objects("entries/")) == len(names)
    wait_for(lambda: store.objects("partial/") == [] and store.uploads() == [], 30, "the staged uploads to go")


def test_an_expired_sessions_multipart_upload_is_aborted(store: Store) -> None:
    process = store.start("sweeper", FILES_SESSION_TTL_SECONDS="1")
    session_id = process.api.create("gone", "abandoned.bin", 12 * MiB)["id"]
    process.api.chunk(session_id, os.urandom(6 * MiB), offset=0)  # a part uploaded, and a tail
    assert store.uploads() == [f"{store.prefix}partial/{session_id}/whole"]
    wait_for(lambda: store.uploads() == [], 30, "the sweeper to abort the expired session's multipart upload")
    wait_for(lambda: store.objects("partial/") == [], 30, "the sweeper to remove the expired session's tail")


def test_a_store_out_of_reach_is_503_then_the_client_resumes_with_nothing_lost(store: Store) -> None:
    proxy = TcpProxy(store.server.port)
    try:
        process = store.start("cut", endpoint=proxy.url)
        content = os.urandom(8 * MiB + 99)
        session_id = process.api.create("cut", "resumed.bin", len(content))["id"]
        assert process.api.chunk(session_id, content[: 6 * MiB], offset=0)["offset"] == 6 * MiB
        with proxy.cut_off():
            refused = process.api.send(session_id, content[6 * MiB :], offset=6 * MiB)
        assert (refused.status_code, refused.json()["code"]) == (503, "unavailable")
        done = resume(process, session_id, content, 30)
        assert done["digest"] == f"blake3:{b3(content)}"
        assert_content(process.api.content("cut", "resumed.bin"), content)
    finally:
        proxy.stop()


def test_presigned_downloads_redirect_a_real_client_to_the_store(store: Store) -> None:
    process = store.start("presigned", FILES_S3_PRESIGNED_DOWNLOADS="true")
    content = os.urandom(3 * MiB + 5)
    process.api.upload("pics", "photo.png", content, mime_type="image/png")
    url = f"{process.base_url}/v1/files/pics/photo.png:content"
    with httpx.Client(follow_redirects=True) as client:
        whole = client.get(url)
        part = client.get(url, headers={"Range": "bytes=10-19"})
    assert whole.history[0].status_code == 307
    assert whole.url.port == store.server.port
    assert (whole.status_code, whole.content, whole.headers["content-type"]) == (200, content, "image/png")
    assert (part.status_code, part.content) == (206, content[10:20])


def refusal(store: Store, endpoint: str, bucket: str) -> subprocess.CompletedProcess:
    environment = store.environment(endpoint)
    environment.update(FILES_STORAGE_URL=f"s3://{bucket}", FILES_DATA_DIR=str(store.tmp_path / "refused"))
    port = str(free_port())
    return subprocess.run(
        service_command("serve", "--port", port), env=environment, capture_output=True, text=True, timeout=60
    )


def test_a_missing_bucket_at_start_is_one_clear_line(store: Store) -> None:
    result = refusal(store, store.server.url, "no-such-bucket")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith("cannot use S3 bucket 'no-such-bucket': no such bucket")
    assert "Traceback" not in result.stderr


def test_bad_credentials_at_start_are_one_clear_line(launcher, store: Store) -> None:
    """A moto server of its own that checks credentials (its IAM knows none of ours)."""
    port = free_port()
    moto = ManagedProcess(
        "moto-with-auth",
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        launcher.log_path("moto-with-auth"),
        {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
    )
    launcher.track(moto)
    moto.launch()
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code > 0,
        30,
        "the moto server with auth to answer",
        ignore=(httpx.TransportError,),
    )
    result = refusal(store, f"http://127.0.0.1:{port}", f"bucket-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith("access denied (check the AWS_* credentials)")
    assert "Traceback" not in result.stderr
