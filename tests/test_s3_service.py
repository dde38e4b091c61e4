"""The service on the object store, through its HTTP API (in process, fakeredis; moto behind a TCP proxy).

What a client sees when the store goes out of reach (503, then it resumes with nothing lost),
and downloads (Range, ETag, presigned redirects) served from the store.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from hashlib import sha256
from pathlib import Path

import fakeredis
import httpx
import pytest
from apihelpers import b3, send, start_session
from conftest import http_client
from s3server import CREDENTIALS, S3Server
from tcpproxy import TcpProxy

from service.config import ConfigError, Settings
from service.core.auth import new_token
from service.ops.fsck import Sessions, fsck
from service.services import Services
from service.storage.s3 import PART_GOAL, PART_SIZE, SPARE_RECORDS, S3BlobStore, S3Location, S3Staging

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024
FINDING = re.compile(r"^(found|repaired)\s+(\S+ \S+)\s+(\S+)")


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[TcpProxy]:
    proxy = TcpProxy(s3_server.port)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def settings(settings: Settings, s3_server: S3Server, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return settings.model_copy(
        update={"storage_url": f"s3://{s3_server.new_bucket()}/files", "s3_endpoint_url": proxy.url}
    )


def content(size: int, seed: int = 7) -> bytes:
    return bytes((seed * 31 + index * 7) % 251 for index in range(size))


async def test_a_store_out_of_reach_is_503_and_the_upload_resumes_with_nothing_lost(
    client: httpx.AsyncClient, proxy: TcpProxy
):
    data = content(7 * MiB)
    session_id = await start_session(client, "b", "cut.bin", len(data))
    first = await send(client, session_id, data[: 6 * MiB], offset=0)  # a whole part and a tail
    assert first.status_code == 200, first.text
    with proxy.cut_off():
        refused = await send(client, session_id, data[6 * MiB :], offset=6 * MiB)
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "unavailable"
    offset = (await client.get(f"/v1/files/session:{session_id}")).json()["offset"]
    assert offset == 6 * MiB
    done = await send(client, session_id, data[offset:], offset=offset)
    assert done.status_code == 200, done.text
    download = await client.get("/v1/files/b/cut.bin:content")
    assert download.status_code == 200
    assert download.content == data


async def test_a_store_cut_off_mid_body_keeps_what_was_acknowledged(client: httpx.AsyncClient, proxy: TcpProxy):
    data = content(12 * MiB, seed=3)
    session_id = await start_session(client, "b", "midway.bin", len(data))

    async def cut_after_half() -> AsyncIterator[bytes]:
        for start in range(0, len(data), MiB):
            if start == 6 * MiB:
                proxy.cut()
            yield data[start : start + MiB]

    refused = await send(client, session_id, cut_after_half(), offset=0)
    assert refused.status_code == 503, refused.text
    proxy.mend()
    offset = (await client.get(f"/v1/files/session:{session_id}")).json()["offset"]
    assert 0 <= offset <= 6 * MiB
    done = await send(client, session_id, data[offset:], offset=offset)
    assert done.status_code == 200, done.text
    assert done.json()["digest"] == f"blake3:{b3(data)}"
    assert (await client.get("/v1/files/b/midway.bin:content")).content == data


async def test_reads_of_a_store_out_of_reach_are_503(client: httpx.AsyncClient, proxy: TcpProxy):
    data = content(1000)
    session_id = await start_session(client, "b", "small.bin", len(data))
    assert (await send(client, session_id, data, offset=0)).status_code == 200
    with proxy.cut_off():
        response = await client.get("/v1/files/b/small.bin:content")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"


async def test_readyz_asks_the_object_store(client: httpx.AsyncClient, proxy: TcpProxy):
    assert (await client.get("/readyz")).status_code == 200
    with proxy.cut_off():
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert "the store cannot take writes" in response.json()["detail"]
    assert (await client.get("/readyz")).status_code == 200


async def stored(client: httpx.AsyncClient, key: str, data: bytes, mime_type: str = "text/plain") -> None:
    session_id = await start_session(client, "b", key, len(data), mime_type=mime_type)
    assert (await send(client, session_id, data, offset=0)).status_code == 200


async def test_downloads_from_the_store_take_a_range_and_an_etag(client: httpx.AsyncClient):
    data = content(3 * MiB, seed=5)
    await stored(client, "ranged.bin", data)
    whole = await client.get("/v1/files/b/ranged.bin:content")
    assert whole.content == data
    assert whole.headers["etag"] == f'"{b3(data)}"'
    assert whole.headers["content-type"] == "text/plain"
    part = await client.get("/v1/files/b/ranged.bin:content", headers={"Range": "bytes=1000-2999999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-2999999/{len(data)}"
    assert part.content == data[1000:3000000]
    suffix = await client.get("/v1/files/b/ranged.bin:content", headers={"Range": "bytes=-10"})
    assert suffix.content == data[-10:]
    unchanged = await client.get("/v1/files/b/ranged.bin:content", headers={"If-None-Match": whole.headers["etag"]})
    assert unchanged.status_code == 304
    missed = await client.get("/v1/files/b/ranged.bin:content", headers={"Range": f"bytes={len(data)}-"})
    assert missed.status_code == 416


async def test_presigned_downloads_redirect_to_the_store_after_the_token_is_checked(make_app, tmp_path: Path):
    token, entry = new_token("reader")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{**entry, "buckets": {"b": ["read", "write"]}}]}))
    app = make_app(s3_presigned_downloads=True, auth_tokens_file=tokens)
    data = content(2 * MiB + 3, seed=9)
    async with http_client(app) as client:
        assert (await client.get("/v1/files/b/presigned.bin:content")).status_code == 401
        client.headers["Authorization"] = f"Bearer {token}"
        await stored(client, "presigned.bin", data, mime_type="image/png")
        redirect = await client.get("/v1/files/b/presigned.bin:content")
        head = await client.head("/v1/files/b/presigned.bin:content")
        assert (await client.get("/v1/files/b/nothing:content")).status_code == 404
    assert redirect.status_code == 307
    assert head.status_code == 200  # a presigned URL is for GET only: HEAD is answered by the service
    assert head.headers["content-length"] == str(len(data))
    location = redirect.headers["location"]
    with httpx.Client() as store:  # a real client, straight to the store, without the service's token
        whole = store.get(location)
        part = store.get(location, headers={"Range": "bytes=5-9"})
    assert whole.status_code == 200
    assert whole.content == data
    assert whole.headers["content-type"] == "image/png"
    assert part.status_code == 206
    assert part.content == data[5:10]


def test_presigned_downloads_need_an_object_store(tmp_path: Path):
    with pytest.raises(ConfigError, match="FILES_S3_PRESIGNED_DOWNLOADS needs an object store"):
        Services.build(Settings(data_dir=tmp_path, s3_presigned_downloads=True), client=fakeredis.FakeAsyncRedis())


async def test_the_sweep_aborts_the_multipart_upload_of_a_session_gone(
    app, client: httpx.AsyncClient, redis, s3_server: S3Server
):
    services = app.state.services
    location = services.staging.location
    session_id = await start_session(client, "b", "abandoned.bin", 8 * MiB)
    assert (await send(client, session_id, content(6 * MiB), offset=0)).status_code == 200
    kept_id = await start_session(client, "b", "kept.bin", 8 * MiB)
    assert (await send(client, kept_id, content(6 * MiB), offset=0)).status_code == 200
    store = s3_server.client()
    assert len(store.list_multipart_uploads(Bucket=location.bucket).get("Uploads", [])) == 2
    await redis.delete(services.keys.session(session_id))  # as when it expires
    assert await services.sweeper.sweep_once() == (1, 0)
    uploads = store.list_multipart_uploads(Bucket=location.bucket).get("Uploads", [])
    assert [upload["Key"] for upload in uploads] == [f"{location.prefix}partial/{kept_id}/whole"]
    assert not list(location.keys(f"partial/{session_id}/"))
    offset = (await client.get(f"/v1/files/session:{kept_id}")).json()["offset"]
    assert (await send(client, kept_id, content(8 * MiB)[offset:], offset=offset)).status_code == 200


async def test_the_sweep_aborts_a_copy_cut_short_and_no_staged_upload(
    app, client: httpx.AsyncClient, s3_server: S3Server
):
    """moto says every multipart upload began in 2010: each is older than a lease here."""
    services = app.state.services
    location = services.staging.location
    session_id = await start_session(client, "b", "staged.bin", 8 * MiB)
    assert (await send(client, session_id, content(6 * MiB), offset=0)).status_code == 200
    store = s3_server.client()
    copy = location.prefix + "blobs/" + "0" * 64
    begun = store.create_multipart_upload(Bucket=location.bucket, Key=copy)
    assert services.temporaries.stale(time.time()) == [f"{copy}?uploadId={begun['UploadId']}"]
    assert await asyncio.to_thread(services.sweeper.sweep_temporaries) == 1
    uploads = store.list_multipart_uploads(Bucket=location.bucket).get("Uploads", [])
    assert [upload["Key"] for upload in uploads] == [f"{location.prefix}partial/{session_id}/whole"]


async def test_the_sweep_leaves_a_copy_whose_parts_are_still_going_up(app, s3_server: S3Server):
    """A copy of a blob over 5 GiB takes longer than a lease: its age is that of its newest part,
    not when it began (moto says 2010), or the sweeper would abort it while it runs."""
    services = app.state.services
    location = services.staging.location
    store = s3_server.client()
    copy = location.prefix + "blobs/" + "1" * 64
    begun = store.create_multipart_upload(Bucket=location.bucket, Key=copy)
    store.upload_part(Bucket=location.bucket, Key=copy, UploadId=begun["UploadId"], PartNumber=1, Body=b"x" * MiB)
    assert services.temporaries.stale(time.time() - 30) == []
    assert await asyncio.to_thread(services.sweeper.sweep_temporaries) == 0
    uploads = store.list_multipart_uploads(Bucket=location.bucket).get("Uploads", [])
    assert [upload["UploadId"] for upload in uploads] == [begun["UploadId"]]
    assert services.temporaries.stale(time.time() + 30) == [f"{copy}?uploadId={begun['UploadId']}"]


async def test_fsck_checks_the_object_store_and_repairs_it(
    app, client: httpx.AsyncClient, s3_server: S3Server, redis_server, settings: Settings
):
    services = app.state.services
    location = services.staging.location
    store = s3_server.client()
    damaged, kept, orphan = content(3000, seed=1), content(2 * MiB, seed=2), b"nobody needs this"
    await stored(client, "damaged", damaged)
    await stored(client, "kept", kept)
    await stored(client, "gone", content(100, seed=3))
    blob = f"{location.prefix}blobs/"
    store.put_object(Bucket=location.bucket, Key=blob + b3(damaged), Body=b"X" + damaged[1:])
    store.delete_object(Bucket=location.bucket, Key=blob + b3(content(100, seed=3)))
    store.put_object(Bucket=location.bucket, Key=blob + b3(orphan), Body=orphan)
    store.put_object(Bucket=location.bucket, Key=f"{location.prefix}entries/b/nonsense.json", Body=b"{")
    store.create_multipart_upload(Bucket=location.bucket, Key=f"{location.prefix}partial/stray/whole")
    copy = store.create_multipart_upload(Bucket=location.bucket, Key=f"{blob}{'1' * 64}")

    async def run_fsck(repair: bool) -> tuple[int, list[str]]:
        lines: list[str] = []
        redis = fakeredis.FakeAsyncRedis(server=redis_server, decode_responses=True)
        try:
            checked = Services.build(settings.model_copy(update={"lock_lease_seconds": 1.0}), redis)
            return await fsck(checked, repair, lines.append, Sessions.ALONE), lines
        finally:
            await redis.aclose()

    code, lines = await run_fsck(repair=False)
    url = f"s3://{location.bucket}/{location.prefix}"
    found = {(match[1], match[2], match[3]) for line in lines if (match := FINDING.match(line))}
    assert found == {
        ("found", "corrupt blob", f"{url}blobs/{b3(damaged)}"),
        ("found", "missing blob", f"{url}entries/b/{sha256(b'damaged').hexdigest()}.json"),
        ("found", "missing blob", f"{url}entries/b/{sha256(b'gone').hexdigest()}.json"),
        ("found", "unreferenced blob", f"{url}blobs/{b3(orphan)}"),
        ("found", "unreadable entry", f"{url}entries/b/nonsense.json"),
        ("found", "stray partial", f"{url}partial/stray/"),
        ("found", "stray temporary", f"{blob}{'1' * 64}?uploadId={copy['UploadId']}"),
    }, lines
    assert code == 1
    code, lines = await run_fsck(repair=True)
    assert code == 1  # the unreadable entry is left for a person, and the orphan kept while it is
    assert store.list_multipart_uploads(Bucket=location.bucket).get("Uploads", []) == []
    assert store.list_objects_v2(Bucket=location.bucket, Prefix=f"{location.prefix}quarantine/")["KeyCount"] == 1
    assert (await client.get("/v1/files/b/kept:content")).content == kept
    assert (await client.get("/v1/files/b/damaged")).status_code == 404
    assert (await client.get("/v1/files/b/gone")).status_code == 404


async def test_a_staged_upload_cut_short_before_its_first_tail_is_named_and_removed(app, s3_server: S3Server):
    staging = app.state.services.staging
    location = staging.location
    store = s3_server.client()
    store.create_multipart_upload(Bucket=location.bucket, Key=f"{location.prefix}partial/abc123/whole")
    assert "abc123" in staging.names()
    staging.remove("abc123")
    assert "abc123" not in staging.names()
    assert store.list_multipart_uploads(Bucket=location.bucket).get("Uploads", []) == []


def staging_on(s3_server: S3Server, sent: list[int] | None = None, called: list[str] | None = None) -> S3Staging:
    """A staging area in a bucket of its own; with `sent`, each request's body size is appended to it,
    with `called` its operation's name."""
    client = s3_server.client()
    if called is not None:
        client.meta.events.register("before-call.s3", lambda model, **kwargs: called.append(model.name))
    if sent is not None:

        def count(request, **kwargs) -> None:
            body = request.body
            if body is None or isinstance(body, bytes | bytearray):
                sent.append(len(body or b""))
                return
            position = body.tell()
            sent.append(body.seek(0, os.SEEK_END) - position)
            body.seek(position)

        client.meta.events.register("before-send.s3", count)
    return S3Staging(S3Location(client, s3_server.new_bucket(), "files/"))


def test_chunks_of_8_mib_go_to_the_store_once(s3_server: S3Server):
    """As the core writes (1 MiB writes, synced at the end of each chunk): each chunk is one part."""
    sent: list[int] = []
    staging = staging_on(s3_server, sent)
    data, offset = content(MiB), 0
    while offset < 48 * MiB:
        staged = staging.open("s", offset)
        for _ in range(8):
            staged.write_at(data, offset)
            offset += MiB
        staged.close()
    staging.finish("s")
    assert 48 * MiB <= sum(sent) <= 48 * MiB + 64 * 1024, sum(sent)


def test_a_chunk_costs_a_listing_its_last_record_read_its_part_and_its_record(s3_server: S3Server):
    """The records before the last are deleted SPARE_RECORDS at a time, in one request, not one per chunk."""
    called: list[str] = []
    staging = staging_on(s3_server, called=called)
    data, offset, chunks = content(PART_SIZE), 0, 2 * SPARE_RECORDS + 1
    for number in range(chunks):
        if number == 1:
            called.clear()  # the first chunk also began the multipart upload
        staged = staging.open("s", offset)
        staged.write_at(data, offset)
        staged.close()  # a part, then the record that counts it
        offset += len(data)
    per_chunk = ["ListObjectsV2", "GetObject", "UploadPart", "PutObject"]
    assert sorted(called) == sorted(per_chunk * (chunks - 1) + ["DeleteObjects"] * 2), called
    records = [key for key in staging.location.keys("partial/s/") if "tail-" in key["Key"]]
    assert len(records) <= SPARE_RECORDS + 1
    assert staging.digests("s").blake3 == b3(data * chunks)
    staging.remove("s")
    assert list(staging.location.keys("")) == []


def test_a_commit_asks_the_store_only_what_the_records_do_not_tell(s3_server: S3Server):
    """The size comes from the last record (no HEAD of the whole object), the records go in one request."""
    called: list[str] = []
    staging = staging_on(s3_server, called=called)
    data, offset = content(2 * PART_SIZE + 3), 0
    for end in (PART_SIZE, 2 * PART_SIZE, len(data)):  # three records: a part each, then a tail of 3 bytes
        staged = staging.open("s", offset)
        staged.write_at(data[offset:end], offset)
        staged.close()
        offset = end
    called.clear()
    digest = b3(data)
    assert S3BlobStore(staging.location).commit(staging, "s", digest)
    completing = ["ListObjectsV2", "GetObject", "UploadPart", "ListParts", "CompleteMultipartUpload"]
    assert called == [*completing, "DeleteObjects", "HeadObject", "CopyObject"], called
    assert S3BlobStore(staging.location).rehash(digest) == digest
    called.clear()
    assert not S3BlobStore(staging.location).commit(staging, "s", digest)  # finished before: its size asked
    assert called == ["ListObjectsV2", "HeadObject", "HeadObject", "CopyObject"], called


def test_the_parts_go_up_with_their_crc32_which_the_whole_object_keeps(s3_server: S3Server):
    """The multipart upload is begun with CRC32, as boto3's own managed upload does: the store checks each
    part's, and the whole object carries a checksum of them (begun without, moto completes it by copying
    every byte twice more)."""
    staging = staging_on(s3_server)
    data = content(PART_SIZE + 3)
    staged = staging.open("s", 0)
    staged.write_at(data, 0)
    staged.close()
    whole, size = staging.finish("s")
    head = staging.location.client.head_object(Bucket=staging.location.bucket, Key=whole, ChecksumMode="ENABLED")
    assert size == len(data) and "ChecksumCRC32" in head, head


def test_a_store_that_lists_the_parts_checksums_is_given_them_back_on_completion(s3_server: S3Server):
    """As S3 requires of an upload begun with a checksum (moto neither lists nor requires them)."""
    staging = staging_on(s3_server)
    completed: list[dict] = []

    def listed_as_s3_lists(parsed: dict, **kwargs) -> None:
        parsed["ChecksumAlgorithm"] = "CRC32"
        for part in parsed.get("Parts", []):
            part["ChecksumCRC32"] = f"crc-of-{part['PartNumber']}"

    events = staging.location.client.meta.events
    events.register("after-call.s3.ListParts", listed_as_s3_lists)
    events.register(
        "before-parameter-build.s3.CompleteMultipartUpload", lambda params, **kwargs: completed.append(params)
    )
    data = content(PART_GOAL + 3)  # a part as the body streams, then the tail as the last
    staged = staging.open("s", 0)
    staged.write_at(data, 0)
    staged.close()
    staging.finish("s")
    parts = completed[0]["MultipartUpload"]["Parts"]
    assert [part["ChecksumCRC32"] for part in parts] == ["crc-of-1", "crc-of-2"], parts


def test_a_writer_gone_after_its_parts_went_up_but_before_sync_resumes_from_the_acknowledged_offset(
    s3_server: S3Server,
):
    staging = staging_on(s3_server)
    first, lost, second = content(20 * MiB, seed=1), content(10 * MiB, seed=2), content(10 * MiB, seed=3)
    staged = staging.open("s", 0)
    for start in range(0, len(first), MiB):
        staged.write_at(first[start : start + MiB], start)
    staged.sync()  # two parts up, 4 MiB in the record: the offset moves to 20 MiB
    for start in range(0, len(lost), MiB):
        staged.write_at(lost[start : start + MiB], len(first) + start)  # part 3 goes up, never acknowledged
    staged._settle()  # then the process dies, its part in the store
    assert staging.length("s") == len(first)
    resumed = staging.open("s", len(first))
    resumed.write_at(second, len(first))
    resumed.close()
    assert staging.digests("s").blake3 == b3(first + second)
