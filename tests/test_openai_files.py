"""OpenAI's Files API at /v1/openai/v1 on the ASGI app: shapes, list semantics, errors in OpenAI's
form, expiry through the sweeper, and a listing of 100,000 files read one range per page."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apihelpers import b3, entry_files, partial_files, stream, sweep, upload
from conftest import http_client, on_both_redises

from service.core.auth import new_token
from service.core.model import Entry
from service.http.openai import new_file_id

pytestmark = pytest.mark.anyio

API = "/v1/openai/v1"


async def create(
    client: httpx.AsyncClient,
    content: bytes = b"hello",
    purpose: str | None = "assistants",
    filename: str = "notes.txt",
    headers: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    data = {**({"purpose": purpose} if purpose is not None else {}), **fields}
    return await client.post(
        f"{API}/files", data=data, files={"file": (filename, content, "text/plain")}, headers=headers
    )


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    """`status` with OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert error["param"] == param
    return error


def assert_nothing_stored(data_dir: Path) -> None:
    assert entry_files(data_dir) == []
    assert not (data_dir / "partial").exists() or partial_files(data_dir) == []


async def test_a_file_is_created_retrieved_downloaded_and_deleted(client):
    created = await create(client, b"some content", filename="data.jsonl")
    assert created.status_code == 200, created.text
    file = created.json()
    assert file["id"].startswith("file-") and file["object"] == "file"
    assert (file["bytes"], file["filename"], file["purpose"], file["status"]) == (
        12,
        "data.jsonl",
        "assistants",
        "processed",
    )
    assert file["expires_at"] is None and isinstance(file["created_at"], int)
    assert (await client.get(f"{API}/files/{file['id']}")).json() == file
    content = await client.get(f"{API}/files/{file['id']}/content")
    assert content.content == b"some content" and content.headers["etag"] == f'"{b3(b"some content")}"'
    deleted = await client.delete(f"{API}/files/{file['id']}")
    assert deleted.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert_openai_error(await client.get(f"{API}/files/{file['id']}"), 404)
    assert_openai_error(await client.get(f"{API}/files/{file['id']}/content"), 404)
    assert_openai_error(await client.delete(f"{API}/files/{file['id']}"), 404)


async def test_a_file_is_an_entry_of_the_openai_bucket_sharing_its_blob(client, settings):
    file = (await create(client, b"shared bytes", purpose="batch", filename="b.jsonl")).json()
    info = (await client.get(f"/v1/files/openai/{file['id']}")).json()
    assert info["metadata"] == {"filename": "b.jsonl", "purpose": "batch"}
    assert info["digest"] == f"blake3:{b3(b'shared bytes')}" and info["mime_type"] == "text/plain"
    seed = await upload(client, "elsewhere", "same.bin", b"shared bytes")
    assert seed["digest"] == info["digest"]
    blobs = [path for path in (settings.data_dir / "blobs").rglob("*") if path.is_file()]
    assert len(blobs) == 1


async def test_a_body_streams_in_many_pieces(client):
    boundary = "b0undary"
    content = bytes(range(256)) * 1000
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
        "Content-Type: application/x-thing\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    pieces = [head[:7], head[7:], *(content[i : i + 999] for i in range(0, len(content), 999)), tail[:3], tail[3:]]
    response = await client.post(
        f"{API}/files", content=stream(*pieces), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 200, response.text
    file = response.json()
    assert file["bytes"] == len(content)
    assert (await client.get(f"{API}/files/{file['id']}/content")).content == content
    assert (await client.get(f"/v1/files/openai/{file['id']}")).json()["mime_type"] == "application/x-thing"


@pytest.mark.parametrize(
    ("purpose", "fields", "param"),
    [
        (None, {}, "purpose"),
        ("fine-tuning", {}, "purpose"),
        (
            "assistants",
            {"expires_after[anchor]": "last_active_at", "expires_after[seconds]": "10"},
            "expires_after[anchor]",
        ),
        (
            "assistants",
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "soon"},
            "expires_after[seconds]",
        ),
    ],
)
async def test_bad_fields_are_refused_and_nothing_is_stored(client, settings, purpose, fields, param):
    error = assert_openai_error(await create(client, purpose=purpose, **fields), 400, param)
    assert error["code"] == "invalid_request"
    assert_nothing_stored(settings.data_dir)


def form(*parts: tuple[str, str, str]) -> tuple[bytes, dict[str, str]]:
    """A multipart body of (name, value, filename) parts in this order, and its Content-Type header."""
    boundary = "xyz"
    body = ""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n"
    return f"{body}--{boundary}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


async def test_fields_after_the_file_count_as_before_it(client):
    """OpenAI takes the form's fields in any order (curl -F file=@... -F purpose=... sends the file first)."""
    body, headers = form(
        ("file", "abc", "a.txt"),
        ("purpose", "batch", ""),
        ("expires_after[anchor]", "created_at", ""),
        ("expires_after[seconds]", "3600", ""),
    )
    response = await client.post(f"{API}/files", content=body, headers=headers)
    assert response.status_code == 200, response.text
    created = response.json()
    assert (created["purpose"], created["filename"], created["bytes"]) == ("batch", "a.txt", 3)
    assert created["expires_at"] == created["created_at"] + 3600
    assert (await client.get(f"{API}/files/{created['id']}/content")).content == b"abc"
    entry = (await client.get(f"/v1/files/openai/{created['id']}")).json()
    assert entry["metadata"]["purpose"] == "batch"


@pytest.mark.parametrize(
    ("parts", "param"),
    [
        ([("file", "abc", "a"), ("purpose", "nope", "")], "purpose"),
        ([("file", "abc", "a")], "purpose"),
        (
            [("file", "abc", "a"), ("purpose", "batch", ""), ("expires_after[anchor]", "later", "")],
            "expires_after[anchor]",
        ),
    ],
)
async def test_a_bad_or_missing_field_after_the_file_stores_nothing(client, settings, parts, param):
    body, headers = form(*parts)
    error = assert_openai_error(await client.post(f"{API}/files", content=body, headers=headers), 400, param)
    assert error["code"] == "invalid_request"
    assert_nothing_stored(settings.data_dir)


async def test_other_methods_on_a_route_are_405_in_openai_s_shape(client):
    response = await client.put(f"{API}/files", content=b"")
    assert_openai_error(response, 405)
    assert response.headers["allow"] == "GET, HEAD, POST"
    response = await client.patch(f"{API}/files/file-1")
    assert_openai_error(response, 405)
    assert response.headers["allow"] == "DELETE, GET, HEAD"
    assert_openai_error(await client.put(f"{API}/nothing"), 404)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--xyz--\r\n', "file"),
        (  # ends before its closing boundary
            b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--xyz\r\n'
            b'Content-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
            None,
        ),
        (b"--xyz\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--xyz--\r\n", None),  # a part without a name
        (b"--nope\r\nnot a form at all", None),
    ],
)
async def test_a_malformed_form_is_refused_and_nothing_is_stored(client, settings, body, param):
    response = await client.post(
        f"{API}/files", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert_openai_error(response, 400, param)
    assert_nothing_stored(settings.data_dir)


async def test_a_body_that_is_no_form_is_refused(client):
    response = await client.post(f"{API}/files", content=b"{}", headers={"content-type": "application/json"})
    assert_openai_error(response, 400)


async def test_a_file_over_the_limit_is_413_and_nothing_is_stored(make_app, settings):
    async with http_client(make_app(max_upload_bytes=1000)) as client:
        error = assert_openai_error(await create(client, b"x" * 1001), 413)
        assert "limit of 1000 bytes" in error["message"] and "chunk" not in error["message"]
        assert (await create(client, b"x" * 1000)).status_code == 200
    assert len(entry_files(settings.data_dir)) == 1


async def test_tokens_are_api_keys_with_the_bucket_s_permissions(make_app, tmp_path):
    reader, reader_entry = new_token("reader", {"openai": ["read"]})
    writer, writer_entry = new_token("writer", {"openai": ["read", "write", "delete"]})
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [reader_entry, writer_entry]}))
    async with http_client(make_app(auth_tokens_file=tokens)) as client:
        missing = await create(client)
        assert_openai_error(missing, 401)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_openai_error(await create(client, headers={"Authorization": "Bearer wrong"}), 401)
        assert_openai_error(await create(client, headers={"Authorization": f"Bearer {reader}"}), 403)
        file = (await create(client, headers={"Authorization": f"Bearer {writer}"})).json()
        as_reader = {"Authorization": f"Bearer {reader}"}
        assert (await client.get(f"{API}/files/{file['id']}", headers=as_reader)).status_code == 200
        assert (await client.get(f"{API}/files", headers=as_reader)).json()["data"] == [file]
        assert_openai_error(await client.delete(f"{API}/files/{file['id']}", headers=as_reader), 403)
        assert_openai_error(await client.get(f"{API}/files"), 401)


async def test_an_id_that_cannot_be_a_key_is_404(client):
    assert_openai_error(await client.get(f"{API}/files/file-..%2Fx"), 404)
    assert_openai_error(await client.get(f"{API}/files/nothing-here"), 404)


# --- listing -------------------------------------------------------------------------------------


async def test_ids_sort_as_their_creation_times():
    ids = [new_file_id(t) for t in (1.0, 1.5, 2.0, 1_000_000.0, 4_000_000_000.0)]
    assert sorted(ids) == ids


async def listed(client: httpx.AsyncClient, **query: str | int) -> dict[str, Any]:
    response = await client.get(f"{API}/files", params=query)
    assert response.status_code == 200, response.text
    return response.json()


@on_both_redises
async def test_listing_pages_both_ways_with_purpose_filter(client):
    ids = []
    for number in range(7):
        file = (
            await create(client, f"file {number}".encode(), purpose="batch" if number % 3 == 0 else "vision")
        ).json()
        ids.append(file["id"])
    everything = await listed(client)
    assert [file["id"] for file in everything["data"]] == ids[::-1]  # OpenAI's default order: newest first
    assert (everything["object"], everything["first_id"], everything["last_id"], everything["has_more"]) == (
        "list",
        ids[-1],
        ids[0],
        False,
    )
    first = await listed(client, order="asc", limit=3)
    assert ([f["id"] for f in first["data"]], first["has_more"]) == (ids[:3], True)
    rest = await listed(client, order="asc", limit=3, after=first["last_id"])
    assert [f["id"] for f in rest["data"]] == ids[3:6]
    last = await listed(client, order="asc", limit=3, after=rest["last_id"])
    assert ([f["id"] for f in last["data"]], last["has_more"]) == (ids[6:], False)
    backwards = await listed(client, order="desc", limit=4, after=ids[5])
    assert ([f["id"] for f in backwards["data"]], backwards["has_more"]) == (ids[4::-1][:4], True)
    batch = await listed(client, purpose="batch", order="asc")
    assert [f["id"] for f in batch["data"]] == [ids[0], ids[3], ids[6]]
    batch_desc = await listed(client, purpose="batch", limit=1, after=ids[6])
    assert ([f["id"] for f in batch_desc["data"]], batch_desc["has_more"]) == ([ids[3]], True)
    assert (await listed(client, purpose="evals")) == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    assert (await listed(client, after="file-zzz", order="asc"))["data"] == []
    assert len((await listed(client, after="file-zzz"))["data"]) == 7


async def test_listing_skips_keys_of_the_bucket_that_are_no_file_ids(client):
    await upload(client, "openai", "a-seed-file.txt", b"not an OpenAI file")
    await upload(client, "openai", "zz/last", b"nor this")
    file = (await create(client)).json()
    assert [f["id"] for f in (await listed(client))["data"]] == [file["id"]]
    assert [f["id"] for f in (await listed(client, order="asc"))["data"]] == [file["id"]]


@pytest.mark.parametrize(
    ("query", "param"), [({"limit": "0"}, "limit"), ({"limit": "10001"}, "limit"), ({"order": "up"}, "order")]
)
async def test_bad_list_queries_are_400(client, query, param):
    assert_openai_error(await client.get(f"{API}/files", params=query), 400, param)


async def test_a_page_of_100000_files_is_one_range_read(app, redis):
    """The files are put straight into the index's layout (the same as its scripts write), then each
    page is counted in Redis round trips and commands: one and two, whatever the bucket holds and whatever
    the order or purpose."""
    services = app.state.services
    keys = services.keys
    entries = {}
    for number in range(100_000):
        file_id = new_file_id(1_700_000_000 + number)
        purpose = "batch" if number % 1000 == 0 else "assistants"
        entries[file_id] = Entry(
            bucket="openai",
            key=file_id,
            mime_type="text/plain",
            bytes=1,
            created_at=1,
            digest="0" * 64,
            metadata={"filename": "f", "purpose": purpose},
        )
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.bucket_keys("openai"), dict.fromkeys(entries, 0))
        pipe.hset(keys.bucket_entries("openai"), mapping={k: e.model_dump_json() for k, e in entries.items()})
        pipe.zadd(keys.bucket_purposes("openai"), {f"{e.metadata['purpose']}\0{k}": 0 for k, e in entries.items()})
        pipe.zadd(keys.buckets, {"openai": 0})
        pipe.set(keys.ready, "test")
        await pipe.execute()
    ordered = sorted(entries)
    index = services.catalog.index
    trips: list[list[str]] = []  # the commands of each round trip
    real, real_pipeline = index.client.execute_command, index.client.pipeline

    async def counted(*args: Any, **options: Any) -> Any:
        trips.append([args[0]])
        return await real(*args, **options)

    def counted_pipeline(*args: Any, **options: Any) -> Any:
        pipe = real_pipeline(*args, **options)
        execute = pipe.execute

        async def recorded(raise_on_error: bool = True) -> Any:
            trips.append([command[0] for command, _ in pipe.command_stack])
            return await execute(raise_on_error)

        pipe.execute = recorded
        return pipe

    async with http_client(app) as client:
        await listed(client, limit=1)  # loads the script into Redis
        index.client.execute_command, index.client.pipeline = counted, counted_pipeline
        page = await listed(client, limit=20, after=ordered[50_000])
        assert [f["id"] for f in page["data"]] == ordered[49_980:50_000][::-1]
        page = await listed(client, limit=20, order="asc", after=ordered[99_990])
        assert ([f["id"] for f in page["data"]], page["has_more"]) == (ordered[99_991:], False)
        page = await listed(client, limit=5, purpose="batch", order="asc", after=ordered[3000])
        assert [f["id"] for f in page["data"]] == [ordered[n] for n in (4000, 5000, 6000, 7000, 8000)]
    # Each page, one round trip: the index's readiness (its own slot on a cluster) and the one range read.
    assert trips == [["EXISTS", "EVAL"]] * 3


# --- expiry --------------------------------------------------------------------------------------


@on_both_redises
async def test_an_expired_file_is_deleted_by_the_sweeper_with_its_event(app, client, redis, settings):
    lasting = (await create(client, b"stays")).json()
    expiring = (
        await create(client, b"goes", **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "0"})
    ).json()
    assert expiring["expires_at"] == expiring["created_at"]
    later = (
        await create(client, b"later", **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    ).json()
    assert later["expires_at"] == later["created_at"] + 3600
    await sweep(app)
    assert_openai_error(await client.get(f"{API}/files/{expiring['id']}"), 404)
    assert {f["id"] for f in (await listed(client))["data"]} == {lasting["id"], later["id"]}
    events = [fields for _, fields in await redis.xrange(app.state.services.keys.events)]
    assert [(e["type"], e["key"]) for e in events if e["type"] == "file.deleted"] == [("file.deleted", expiring["id"])]
    assert b3(b"goes") not in {path.name for path in (settings.data_dir / "blobs").rglob("*")}


async def test_expiry_survives_a_redis_that_lost_its_data(app, client, redis):
    expiring = (
        await create(client, b"goes", **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "0"})
    ).json()
    await redis.flushall()
    await sweep(app)
    assert_openai_error(await client.get(f"{API}/files/{expiring['id']}"), 404)


@pytest.mark.parametrize(
    "part",
    [
        b'Content-Disposition: form-data; name="purpose"\r\n\r\n' + b"x" * 1025,  # a field over its limit
        b'Content-Disposition: form-data; name="purpose"\r\n\r\n\xff\xfe',  # not UTF-8
        b'Content-Disposition: form-data; name="purpose"\r\nX-Long: ' + b"y" * 17000 + b"\r\n\r\nbatch",
    ],
)
async def test_oversized_or_undecodable_fields_are_400(client, settings, part):
    body = b"--xyz\r\n" + part + b"\r\n--xyz--\r\n"
    response = await client.post(
        f"{API}/files", content=body, headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert_openai_error(response, 400)
    assert_nothing_stored(settings.data_dir)


async def test_a_form_of_many_unknown_fields_is_read_in_bounded_memory(client):
    """Fields other than OpenAI's are read past, not kept: 20 MiB of them cost no 20 MiB of memory."""
    boundary = "b0undary"
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="x{{}}"\r\n\r\n{"v" * 1000}\r\n'

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, 20_000, 100):
            yield "".join(field.format(n) for n in range(start, start + 100)).encode()
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nabc\r\n'
            f"--{boundary}--\r\n"
        ).encode()

    tracemalloc.start()
    try:
        response = await client.post(
            f"{API}/files", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert peak < 8 * 2**20, peak


async def test_a_header_without_end_is_refused_before_the_rest_of_the_body_is_read(client):
    """A part's headers are at most 16 KiB in all, however they are cut: the 17th KiB is a 400."""
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        yield b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\nX-Long: '
        for _ in range(10_000):  # 10 MiB of one header value that never ends
            read += 1024
            yield b"y" * 1024

    response = await client.post(
        f"{API}/files", content=body(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert_openai_error(response, 400)
    assert read < 64 * 1024, read


async def test_many_headers_of_one_part_are_refused(client):
    headers = "".join(f"X-H{n}: {'h' * 100}\r\n" for n in range(200))  # 20 KiB of headers, each small
    body = f'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n{headers}\r\nbatch\r\n--xyz--\r\n'
    response = await client.post(
        f"{API}/files", content=body.encode(), headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert_openai_error(response, 400)
