"""The tus 1.0.0 front at /tus/, through HTTP: every status code and header the protocol names."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from email.utils import parsedate_to_datetime

import anyio
import httpx
import pytest
from apihelpers import b3, download, entry_files, partial_files, session_path
from conftest import BASE_URL, http_client

from service.core.auth import new_token

pytestmark = pytest.mark.anyio

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK = "application/offset+octet-stream"


def metadata(**pairs: str | bytes) -> str:
    return ",".join(
        f"{name} {base64.b64encode(value if isinstance(value, bytes) else value.encode()).decode()}"
        for name, value in pairs.items()
    )


async def create(client: httpx.AsyncClient, length: int | None, headers: dict[str, str] | None = None, **kwargs):
    sizes = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    return await client.post("/tus/", headers={**TUS, **sizes, **(headers or {})}, **kwargs)


async def new_upload(client: httpx.AsyncClient, length: int | None, **pairs: str) -> str:
    """Create an upload that must be accepted; returns its path (/tus/<id>)."""
    response = await create(client, length, {"Upload-Metadata": metadata(**pairs)} if pairs else None)
    assert response.status_code == 201, response.text
    location = response.headers["location"]
    assert location.startswith(f"{BASE_URL}/tus/")
    return location.removeprefix(BASE_URL)


async def patch(client: httpx.AsyncClient, path: str, offset: int, content: bytes, **headers: str) -> httpx.Response:
    return await client.patch(
        path, content=content, headers={**TUS, "Upload-Offset": str(offset), "Content-Type": CHUNK, **headers}
    )


async def head(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.head(path, headers=TUS)


def checksum(algorithm: str, content: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, content).digest()).decode()}"


def assert_expires_soon(response: httpx.Response, ttl: int) -> None:
    expires = parsedate_to_datetime(response.headers["upload-expires"]).timestamp()
    assert time.time() + ttl - 5 <= expires <= time.time() + ttl + 5


async def test_options_advertises_the_protocol(client, settings):
    response = await client.options("/tus/")
    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.headers["tus-version"] == "1.0.0"
    extensions = response.headers["tus-extension"].split(",")
    assert set(extensions) == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    }
    assert int(response.headers["tus-max-size"]) == settings.max_upload_bytes
    assert set(response.headers["tus-checksum-algorithm"].split(",")) == {"sha1", "sha256", "md5"}


async def test_an_upload_in_two_patches_becomes_a_file(client, settings):
    content = b"0123456789" * 1000
    path = await new_upload(client, len(content), bucket="docs", key="a/b.txt", filetype="text/plain", x="1")
    first = await patch(client, path, 0, content[:3000])
    assert first.status_code == 204
    assert first.headers["upload-offset"] == "3000"
    assert first.headers["tus-resumable"] == "1.0.0"
    assert_expires_soon(first, settings.session_ttl_seconds)
    assert (await head(client, path)).headers["upload-offset"] == "3000"
    last = await patch(client, path, 3000, content[3000:])
    assert last.status_code == 204
    assert last.headers["upload-offset"] == str(len(content))
    got = await download(client, "docs", "a/b.txt")
    assert got.content == content
    assert got.headers["content-type"] == "text/plain"
    info = (await client.get("/v1/files/docs/a/b.txt")).json()
    assert info["metadata"] == {"bucket": "docs", "key": "a/b.txt", "filetype": "text/plain", "x": "1"}
    assert info["digest"] == f"blake3:{b3(content)}"


async def test_the_defaults_bucket_key_and_mime_type(client):
    path = await new_upload(client, 2, filename="my photo.jpg")
    upload_id = path.rsplit("/", 1)[1]
    assert (await patch(client, path, 0, b"ab")).status_code == 204
    info = (await client.get(f"/v1/files/uploads/{upload_id}/my_photo.jpg")).json()
    assert info["mime_type"] == "application/octet-stream"
    assert info["metadata"] == {"filename": "my photo.jpg"}
    nameless = await new_upload(client, 1)
    assert (await patch(client, nameless, 0, b"c")).status_code == 204
    assert (await client.get(f"/v1/files/uploads/{nameless.rsplit('/', 1)[1]}")).status_code == 200


async def test_the_tus_bucket_setting(make_app):
    async with http_client(make_app(tus_bucket="inbox")) as client:
        path = await new_upload(client, 1, name="n.txt", type="text/csv")
        assert (await patch(client, path, 0, b"x")).status_code == 204
        [file] = (await client.get("/v1/files/inbox")).json()["data"]
        assert file["key"].endswith("/n.txt")
        assert file["mime_type"] == "text/csv"


async def test_the_upload_is_a_session_of_the_seeds_api(client):
    path = await new_upload(client, 10, bucket="b", key="k")
    assert (await patch(client, path, 0, b"01234")).status_code == 204
    upload_id = path.rsplit("/", 1)[1]
    session = (await client.get(session_path(upload_id))).json()
    assert (session["id"], session["offset"], session["size"]) == (upload_id, 5, 10)
    done = await client.post(session_path(upload_id), content=b"56789", headers={"Upload-Offset": "5"})
    assert done.json()["key"] == "k"
    response = await head(client, path)
    assert (response.headers["upload-offset"], response.headers["upload-length"]) == ("10", "10")


async def test_head_reports_offset_length_metadata_and_expiry_also_after_completion(client, settings):
    pairs = metadata(bucket="b", key="k", filename="k.bin", empty="")
    created = await create(client, 4, {"Upload-Metadata": pairs})
    path = created.headers["location"].removeprefix(BASE_URL)
    response = await head(client, path)
    assert response.status_code == 200
    assert response.headers["upload-offset"] == "0"
    assert response.headers["upload-length"] == "4"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["upload-metadata"] == pairs.replace("empty ", "empty")
    assert_expires_soon(response, settings.session_ttl_seconds)
    assert "upload-defer-length" not in response.headers
    await patch(client, path, 0, b"abcd")
    after = await head(client, path)
    assert after.status_code == 200
    assert (after.headers["upload-offset"], after.headers["upload-length"]) == ("4", "4")
    assert after.headers["cache-control"] == "no-store"


async def test_creation_with_upload(client):
    content = b"whole file in the POST"
    response = await create(
        client,
        len(content),
        {"Upload-Metadata": metadata(bucket="b", key="k"), "Content-Type": CHUNK},
        content=content,
    )
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == str(len(content))
    assert (await download(client, "b", "k")).content == content


async def test_creation_with_part_of_the_upload(client):
    response = await create(
        client, 6, {"Upload-Metadata": metadata(bucket="b", key="k"), "Content-Type": CHUNK}, content=b"abc"
    )
    assert response.headers["upload-offset"] == "3"
    path = response.headers["location"].removeprefix(BASE_URL)
    assert (await patch(client, path, 3, b"def")).status_code == 204
    assert (await download(client, "b", "k")).content == b"abcdef"


async def test_an_empty_upload_completes_at_creation(client):
    path = await new_upload(client, 0, bucket="b", key="empty")
    assert (await download(client, "b", "empty")).content == b""
    response = await head(client, path)
    assert (response.headers["upload-offset"], response.headers["upload-length"]) == ("0", "0")


async def test_deferred_length_is_declared_once_by_a_later_patch(client):
    path = await new_upload(client, None, bucket="b", key="k")
    response = await head(client, path)
    assert response.headers["upload-defer-length"] == "1"
    assert "upload-length" not in response.headers
    assert (await client.get(session_path(path.rsplit("/", 1)[1]))).json()["size"] is None
    assert (await patch(client, path, 0, b"abc")).status_code == 204
    assert (await head(client, path)).headers["upload-defer-length"] == "1"
    last = await patch(client, path, 3, b"de", **{"Upload-Length": "5"})
    assert last.status_code == 204
    assert last.headers["upload-offset"] == "5"
    assert (await download(client, "b", "k")).content == b"abcde"


async def test_deferred_length_declared_then_sent(client):
    path = await new_upload(client, None, bucket="b", key="k")
    assert (await patch(client, path, 0, b"ab", **{"Upload-Length": "4"})).status_code == 204
    response = await head(client, path)
    assert (response.headers["upload-length"], "upload-defer-length" in response.headers) == ("4", False)
    changed = await patch(client, path, 2, b"cd", **{"Upload-Length": "5"})
    assert changed.status_code == 400
    assert (await patch(client, path, 2, b"cd", **{"Upload-Length": "4"})).status_code == 204
    assert (await download(client, "b", "k")).content == b"abcd"


async def test_deferred_length_less_than_received_is_refused(client):
    path = await new_upload(client, None, bucket="b", key="k")
    await patch(client, path, 0, b"abcd")
    assert (await patch(client, path, 4, b"", **{"Upload-Length": "2"})).status_code == 400
    assert (await head(client, path)).headers["upload-defer-length"] == "1"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Upload-Length": "1", "Upload-Defer-Length": "1"}, {"Upload-Defer-Length": "2"}, {"Upload-Length": "-1"}],
)
async def test_creation_needs_one_length(client, headers):
    response = await client.post("/tus/", headers={**TUS, **headers})
    assert response.status_code == 400
    assert response.headers["tus-resumable"] == "1.0.0"


async def test_412_for_another_version(client):
    for headers in ({}, {"Tus-Resumable": "0.2.2"}):
        response = await client.post("/tus/", headers={**headers, "Upload-Length": "1"})
        assert response.status_code == 412
        assert response.headers["tus-version"] == "1.0.0"
        assert response.headers["tus-resumable"] == "1.0.0"
        assert response.json()["code"] == "unsupported_version"
    path = await new_upload(client, 1)
    response = await client.patch(path, content=b"x", headers={"Upload-Offset": "0", "Content-Type": CHUNK})
    assert response.status_code == 412
    assert (await head(client, path)).headers["upload-offset"] == "0"


async def test_415_without_the_chunk_content_type(client, settings):
    path = await new_upload(client, 1)
    for content_type in ({}, {"Content-Type": "application/octet-stream"}):
        response = await client.patch(path, content=b"x", headers={**TUS, "Upload-Offset": "0", **content_type})
        assert response.status_code == 415
        assert response.headers["tus-resumable"] == "1.0.0"
        assert response.json()["code"] == "unsupported_media_type"
        assert_expires_soon(response, settings.session_ttl_seconds)
    assert (await head(client, path)).headers["upload-offset"] == "0"
    unknown = await client.patch("/tus/" + "0" * 32, content=b"x", headers={**TUS, "Upload-Offset": "0"})
    assert unknown.status_code == 415
    assert "upload-expires" not in unknown.headers


async def test_409_for_an_offset_mismatch(client, settings):
    path = await new_upload(client, 4)
    await patch(client, path, 0, b"ab")
    response = await patch(client, path, 0, b"ab")
    assert response.status_code == 409
    assert response.headers["tus-resumable"] == "1.0.0"
    assert_expires_soon(response, settings.session_ttl_seconds)
    assert (await head(client, path)).headers["upload-offset"] == "2"


async def test_a_patch_needs_an_offset(client):
    path = await new_upload(client, 1)
    response = await client.patch(path, content=b"x", headers={**TUS, "Content-Type": CHUNK})
    assert response.status_code == 400


async def test_413_over_the_limit_or_past_the_length(make_app):
    async with http_client(make_app(max_upload_bytes=10)) as client:
        assert (await create(client, 11)).status_code == 413
        path = await new_upload(client, 3)
        response = await patch(client, path, 0, b"abcd")
        assert response.status_code == 413
        assert response.headers["tus-resumable"] == "1.0.0"
        assert (await head(client, path)).headers["upload-offset"] == "0"
        deferred = await new_upload(client, None)
        assert (await patch(client, deferred, 0, b"x" * 11)).status_code == 413
        assert (await patch(client, deferred, 0, b"x", **{"Upload-Length": "11"})).status_code == 413


async def test_a_post_overriding_its_method_is_that_method(client):
    """tus's X-HTTP-Method-Override (tus-js-client's `overridePatchMethod`): a POST as PATCH, HEAD or DELETE."""
    path = await new_upload(client, 6, bucket="b", key="k")

    async def post(method: str, content: bytes = b"", **headers: str) -> httpx.Response:
        return await client.post(path, content=content, headers={**TUS, "X-HTTP-Method-Override": method, **headers})

    patched = await post("PATCH", b"abc", **{"Upload-Offset": "0", "Content-Type": CHUNK})
    assert (patched.status_code, patched.headers["upload-offset"]) == (204, "3")
    looked = await post("HEAD")
    assert (looked.status_code, looked.headers["upload-offset"], looked.headers["upload-length"]) == (200, "3", "6")
    done = await post("patch", b"def", **{"Upload-Offset": "3", "Content-Type": CHUNK})
    assert done.status_code == 204
    assert (await download(client, "b", "k")).content == b"abcdef"
    other = await new_upload(client, 3)
    assert (await client.post(other, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})).status_code == 204
    assert (await head(client, other)).status_code == 404


async def test_405_names_the_methods_of_an_upload(client):
    path = await new_upload(client, 3)
    for response in (
        await client.get(path, headers=TUS),
        await client.post(path, headers=TUS),
        await client.post(path, headers={**TUS, "X-HTTP-Method-Override": "PUT"}),
    ):
        assert response.status_code == 405
        assert response.headers["allow"] == "HEAD, PATCH, DELETE"
        assert response.headers["tus-resumable"] == "1.0.0"
        assert "upload-expires" in response.headers


async def test_a_refused_first_chunk_leaves_no_upload_behind(make_app, redis, settings):
    """creation-with-upload whose chunk is refused (460, 413): the answer has no Location to resume
    at, so no upload is kept to count against the client's open uploads."""
    async with http_client(make_app(max_upload_bytes=10)) as client:
        headers = {"Content-Type": CHUNK, "Upload-Checksum": checksum("sha1", b"other")}
        assert (await create(client, 5, headers, content=b"hello")).status_code == 460
        assert (await create(client, 3, {"Content-Type": CHUNK}, content=b"hello")).status_code == 413
    assert [key async for key in redis.scan_iter(match="*session:*")] == []
    assert partial_files(settings.data_dir) == []


async def test_404_for_unknown_uploads(client):
    for path in ("/tus/" + "0" * 32, "/tus/not-an-id"):
        assert (await head(client, path)).status_code == 404
        response = await patch(client, path, 0, b"x")
        assert response.status_code == 404
        assert response.headers["tus-resumable"] == "1.0.0"
        assert "upload-expires" not in response.headers
        assert (await client.delete(path, headers=TUS)).status_code == 404


async def test_delete_terminates_the_upload(client, settings):
    path = await new_upload(client, 10)
    await patch(client, path, 0, b"abc")
    response = await client.delete(path, headers=TUS)
    assert response.status_code == 204
    assert response.headers["tus-resumable"] == "1.0.0"
    assert (await head(client, path)).status_code == 404
    assert (await patch(client, path, 3, b"d")).status_code == 404
    assert partial_files(settings.data_dir) == []


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
async def test_a_chunk_with_a_matching_checksum_is_kept(client, algorithm):
    path = await new_upload(client, 6, bucket="b", key="k")
    response = await patch(client, path, 0, b"abc", **{"Upload-Checksum": checksum(algorithm, b"abc")})
    assert response.status_code == 204
    assert response.headers["upload-offset"] == "3"
    await patch(client, path, 3, b"def", **{"Upload-Checksum": checksum(algorithm, b"def")})
    assert (await download(client, "b", "k")).content == b"abcdef"


async def test_460_for_a_checksum_mismatch_and_the_chunk_is_not_kept(client, settings):
    path = await new_upload(client, 6, bucket="b", key="k")
    await patch(client, path, 0, b"abc")
    response = await patch(client, path, 3, b"def", **{"Upload-Checksum": checksum("sha1", b"xyz")})
    assert response.status_code == 460
    assert response.headers["tus-resumable"] == "1.0.0"
    assert_expires_soon(response, settings.session_ttl_seconds)
    assert (await head(client, path)).headers["upload-offset"] == "3"
    [partial] = partial_files(settings.data_dir)
    assert partial.read_bytes() == b"abc"
    assert (await client.get("/v1/files/b/k")).status_code == 404
    again = await patch(client, path, 3, b"def", **{"Upload-Checksum": checksum("sha1", b"def")})
    assert again.status_code == 204
    assert (await download(client, "b", "k")).content == b"abcdef"


async def test_a_large_chunk_with_a_bad_checksum_leaves_nothing_on_disk(client, settings):
    content = bytes(range(256)) * 20000  # several of the writer's buffers
    path = await new_upload(client, len(content) + 1, bucket="b", key="k")
    response = await patch(client, path, 0, content, **{"Upload-Checksum": checksum("md5", b"other")})
    assert response.status_code == 460
    assert (await head(client, path)).headers["upload-offset"] == "0"
    # The chunk was refused before or after a first buffer reached the disk: no bytes either way.
    assert [partial.stat().st_size for partial in partial_files(settings.data_dir)] in ([], [0])


@pytest.mark.parametrize("header", ["crc32 AAAA", "sha1 not-base64!", "sha1"])
async def test_a_bad_checksum_header_is_400(client, header):
    path = await new_upload(client, 1)
    assert (await patch(client, path, 0, b"x", **{"Upload-Checksum": header})).status_code == 400
    assert (await head(client, path)).headers["upload-offset"] == "0"


@pytest.mark.parametrize(
    "header",
    [
        "filename not-base64!",
        "filename " + base64.b64encode(b"\xff\xfe").decode(),
        metadata(bucket="bad bucket"),
        metadata(key="/abs"),
        metadata(key="a/../b"),
        metadata(filetype="not a type"),
        metadata(**{"a.b": "x"}),
        "a " + base64.b64encode(b"1").decode() + ",a " + base64.b64encode(b"2").decode(),
    ],
)
async def test_bad_upload_metadata_is_400_and_nothing_is_stored(client, redis, settings, header):
    response = await client.post("/tus/", headers={**TUS, "Upload-Length": "1", "Upload-Metadata": header})
    assert response.status_code == 400, response.text
    assert response.headers["tus-resumable"] == "1.0.0"
    assert [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}session:*")] == []
    assert entry_files(settings.data_dir) == []


async def new_partial(client: httpx.AsyncClient, content: bytes, headers: dict[str, str] | None = None) -> str:
    """A partial upload holding `content` (sent with its creation), finished; returns its path."""
    response = await create(
        client, len(content), {"Upload-Concat": "partial", "Content-Type": CHUNK, **(headers or {})}, content=content
    )
    assert response.status_code == 201, response.text
    assert response.headers["upload-offset"] == str(len(content))
    return response.headers["location"].removeprefix(BASE_URL)


async def create_final(
    client: httpx.AsyncClient, urls: list[str], headers: dict[str, str] | None = None, **pairs: str
) -> httpx.Response:
    concat = {"Upload-Concat": "final;" + " ".join(urls)}
    described = {"Upload-Metadata": metadata(**pairs)} if pairs else {}
    return await client.post("/tus/", headers={**TUS, **concat, **described, **(headers or {})})


async def session_keys(redis, settings) -> list[str]:
    return [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}session:*")]


async def test_a_final_upload_is_its_partial_uploads_in_the_order_named(client, settings):
    first, second = b"hello, " * 1000, b"world" * 999
    # A partial upload may defer its length too.
    response = await client.post("/tus/", headers={**TUS, "Upload-Defer-Length": "1", "Upload-Concat": "partial"})
    assert response.status_code == 201
    late = response.headers["location"].removeprefix(BASE_URL)
    early = await new_partial(client, first, {"Upload-Metadata": metadata(filename="ignored")})
    head_partial = await head(client, early)
    assert head_partial.headers["upload-concat"] == "partial"
    assert head_partial.headers["upload-length"] == head_partial.headers["upload-offset"] == str(len(first))
    assert (await patch(client, late, 0, second, **{"Upload-Length": str(len(second))})).status_code == 204
    response = await create_final(
        client, [early, f"{BASE_URL}{late}"], bucket="b", key="joined", filetype="text/plain", filename="j.txt"
    )
    assert response.status_code == 201, response.text
    final = response.headers["location"].removeprefix(BASE_URL)
    assert response.headers["tus-resumable"] == "1.0.0" and "upload-expires" in response.headers
    downloaded = await download(client, "b", "joined")
    assert downloaded.content == first + second
    assert downloaded.headers["content-type"].startswith("text/plain")
    info = (await client.get("/v1/files/b/joined")).json()
    assert info["metadata"] == {"bucket": "b", "key": "joined", "filetype": "text/plain", "filename": "j.txt"}
    assert info["digest"] == f"blake3:{b3(first + second)}"
    described = await head(client, final)
    assert described.status_code == 200
    assert described.headers["upload-concat"] == f"final;{BASE_URL}{early} {BASE_URL}{late}"
    assert described.headers["upload-length"] == described.headers["upload-offset"] == str(len(first + second))
    for path in (early, late):  # consumed by the final upload
        assert (await head(client, path)).status_code == 404
    assert partial_files(settings.data_dir) == []


async def test_a_patch_on_a_final_upload_is_403(client):
    final = (await create_final(client, [await new_partial(client, b"abc")])).headers["location"]
    response = await patch(client, final.removeprefix(BASE_URL), 3, b"more")
    assert response.status_code == 403
    assert response.headers["tus-resumable"] == "1.0.0"
    assert response.json()["code"] == "final_upload"
    assert "upload-expires" in response.headers


async def test_a_final_over_an_unfinished_partial_upload_is_400_and_keeps_nothing(client, redis, settings):
    done = await new_partial(client, b"done")
    unfinished = await create(client, 10, {"Upload-Concat": "partial"})
    unfinished_path = unfinished.headers["location"].removeprefix(BASE_URL)
    assert (await patch(client, unfinished_path, 0, b"half")).status_code == 204
    before = sorted(await session_keys(redis, settings))
    response = await create_final(client, [done, unfinished_path], bucket="b", key="never")
    assert response.status_code == 400, response.text
    assert "not complete" in response.json()["detail"]
    assert sorted(await session_keys(redis, settings)) == before  # the final upload was not kept
    assert entry_files(settings.data_dir) == []
    assert (await patch(client, unfinished_path, 4, b"finish")).status_code == 204  # the parts are intact
    response = await create_final(client, [done, unfinished_path], bucket="b", key="now")
    assert response.status_code == 201
    assert (await download(client, "b", "now")).content == b"donehalffinish"


async def test_a_final_naming_an_unknown_upload_is_404(client):
    response = await create_final(client, [await new_partial(client, b"a"), "/tus/" + "0" * 32])
    assert response.status_code == 404


@pytest.mark.parametrize(
    "concat",
    ["final", "final;", "finale;/tus/x", "partial;/tus/x", "final;/files/0123456789abcdef0123456789abcdef", "both"],
)
async def test_a_bad_upload_concat_is_400(client, redis, settings, concat):
    response = await client.post("/tus/", headers={**TUS, "Upload-Length": "1", "Upload-Concat": concat})
    assert response.status_code == 400, response.text
    assert await session_keys(redis, settings) == []


async def test_a_final_with_a_length_or_over_ordinary_or_repeated_uploads_is_400(client):
    part = await new_partial(client, b"abc")
    ordinary = await new_upload(client, 3)
    assert (await patch(client, ordinary, 0, b"abc")).status_code == 204
    assert (await create_final(client, [part], {"Upload-Length": "3"})).status_code == 400
    assert (await create_final(client, [part, part])).status_code == 400
    assert (await create_final(client, [part, ordinary])).status_code == 400
    assert (await create_final(client, [part])).status_code == 201


async def test_two_patches_at_once_one_gets_409(client):
    path = await new_upload(client, 2, bucket="b", key="k")
    started, release = anyio.Event(), anyio.Event()

    async def slow_body():
        yield b"a"
        started.set()  # asked for more: the service is reading this body, holding the upload
        await release.wait()
        yield b"b"

    statuses = []

    async def first() -> None:
        statuses.append((await patch(client, path, 0, slow_body())).status_code)

    async with anyio.create_task_group() as group:
        group.start_soon(first)
        with anyio.fail_after(10):
            await started.wait()
        second = await patch(client, path, 0, b"ab")
        assert second.status_code == 409
        assert second.headers["tus-resumable"] == "1.0.0"
        release.set()
    assert statuses == [204]
    assert (await download(client, "b", "k")).content == b"ab"


ISSUED = {
    name: new_token(name, grants) for name, grants in [("writer", None), ("other", None), ("reader", {"*": ["read"]})]
}


@pytest.fixture
async def secured(make_app, tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry for _, entry in ISSUED.values()]}))
    async with http_client(make_app(auth_tokens_file=path)) as client:
        yield client


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUED[name][0]}"}


async def test_tokens_as_everywhere(secured):
    assert (await secured.post("/tus/", headers={**TUS, "Upload-Length": "1"})).status_code == 401
    refused = await secured.post("/tus/", headers={**TUS, **bearer("reader"), "Upload-Length": "1"})
    assert refused.status_code == 403
    created = await secured.post("/tus/", headers={**TUS, **bearer("writer"), "Upload-Length": "1"})
    assert created.status_code == 201
    path = created.headers["location"].removeprefix(BASE_URL)
    assert (await secured.head(path, headers={**TUS, **bearer("other")})).status_code == 404
    stranger = await secured.patch(
        path, content=b"x", headers={**TUS, **bearer("other"), "Upload-Offset": "0", "Content-Type": CHUNK}
    )
    assert stranger.status_code == 404
    assert (await secured.delete(path, headers={**TUS, **bearer("other")})).status_code == 404
    assert (await secured.head(path, headers={**TUS, **bearer("writer")})).status_code == 200
    done = await secured.patch(
        path, content=b"x", headers={**TUS, **bearer("writer"), "Upload-Offset": "0", "Content-Type": CHUNK}
    )
    assert done.status_code == 204


async def test_a_final_naming_a_partial_upload_of_another_token_is_404(secured):
    partial = await secured.post(
        "/tus/",
        content=b"theirs",
        headers={**TUS, **bearer("other"), "Upload-Length": "6", "Upload-Concat": "partial", "Content-Type": CHUNK},
    )
    assert partial.status_code == 201
    path = partial.headers["location"].removeprefix(BASE_URL)
    final = await create_final(secured, [path], bearer("writer"))
    assert final.status_code == 404
    assert (await secured.head(path, headers={**TUS, **bearer("other")})).headers["upload-concat"] == "partial"
    assert (await create_final(secured, [path], bearer("other"))).status_code == 201


async def test_cors_preflight_and_exposed_headers(make_app):
    origin = "https://app.example"
    async with http_client(make_app(cors_origins=(origin,))) as client:
        preflight = await client.options(
            "/tus/",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "tus-resumable,upload-length,upload-offset,upload-metadata,"
                "upload-defer-length,upload-checksum,upload-concat,x-http-method-override,content-type,authorization",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        created = await create(client, 1, {"Origin": origin})
        exposed = {name.strip().lower() for name in created.headers["access-control-expose-headers"].split(",")}
        assert {"location", "upload-offset", "upload-length", "upload-expires", "upload-metadata"} <= exposed
        assert {"tus-resumable", "tus-version", "tus-extension", "tus-max-size"} <= exposed
