"""Stored files through HTTP: listing buckets and keys, file info, deletion, deduplication, and Redis loss."""

from __future__ import annotations

import pytest
from apihelpers import assert_error, b3, blob_files, blob_path, content_url, download, entry_files, sweep, upload
from conftest import http_client

from service.core.model import Entry
from service.storage.entries import EntryStore

pytestmark = pytest.mark.anyio

# Keys whose byte order differs from a case-blind or natural order: upper before lower,
# '-' (0x2d) < '.' (0x2e) < '/' (0x2f) < digits < upper < '_' (0x5f) < lower.
MIXED_KEYS = ["b", "B", "a", "A", "a-b", "a.b", "a/b", "a_b", "a0", "a9/z"]
MIXED_KEYS += ["Z9", "0", "10", "9", "-x", "_y", ".z", "a/b/c", "ab"]


@pytest.fixture
def fast_disk(monkeypatch):
    """For tests that store many files to look at listings: durability is not under test there, speed is."""
    monkeypatch.setattr("os.fsync", lambda fd: None)


async def keys_of(client, bucket: str, **query: object) -> tuple[list[str], bool]:
    response = await client.get(f"/v1/files/{bucket}", params=query)
    assert response.status_code == 200, response.text
    body = response.json()
    return [file["key"] for file in body["data"]], body["has_more"]


async def bucket_names(client) -> list[str]:
    response = await client.get("/v1/files")
    assert response.status_code == 200, response.text
    return [bucket["name"] for bucket in response.json()["data"]]


async def fill(client, bucket: str, keys: list[str]) -> None:
    for key in keys:
        await upload(client, bucket, key, key.encode())


# --- GET /v1/files ---------------------------------------------------------------------------


async def test_no_files_no_buckets(client):
    response = await client.get("/v1/files")
    assert response.status_code == 200 and response.json()["data"] == []


async def test_buckets_are_listed_sorted_by_name(client):
    names = ["b", "B", "a", "A-1", "a_2", "z9", "0", "_x", "-y"]
    for name in names:
        await upload(client, name, "k", b"x")
    assert await bucket_names(client) == sorted(names)
    assert (await client.get("/v1/files")).json()["data"][0] == {"name": min(names)}


async def test_a_bucket_with_only_an_unfinished_upload_is_not_listed(client):
    await upload(client, "full", "k", b"x")
    created = await client.post(
        "/v1/files", json={"bucket": "pending", "key": "k", "mime_type": "text/plain", "size": 5}
    )
    assert created.status_code == 200
    assert await bucket_names(client) == ["full"]


async def test_a_bucket_disappears_with_its_last_file(client):
    await upload(client, "keep", "k", b"x")
    await fill(client, "gone", ["one", "two/three"])
    assert await bucket_names(client) == ["gone", "keep"]
    assert (await client.delete("/v1/files/gone/one")).status_code == 200
    assert await bucket_names(client) == ["gone", "keep"]
    assert (await client.delete("/v1/files/gone/two/three")).status_code == 200
    assert await bucket_names(client) == ["keep"]
    await upload(client, "gone", "again", b"y")
    assert await bucket_names(client) == ["gone", "keep"]


# --- GET /v1/files/<bucket> ------------------------------------------------------------------


async def test_files_are_listed_sorted_by_key_in_byte_order(client, fast_disk):
    await fill(client, "b", MIXED_KEYS)
    keys, has_more = await keys_of(client, "b")
    assert keys == sorted(MIXED_KEYS) and has_more is False


async def test_a_listing_holds_file_responses(client):
    file = await upload(client, "b", "dir/k.txt", b"hello", mime_type="text/plain")
    response = await client.get("/v1/files/b")
    assert response.json() == {**response.json(), "data": [file], "has_more": False}
    assert file["url"] == content_url("b", "dir/k.txt")


async def test_a_listing_stays_in_its_bucket(client):
    await fill(client, "one", ["a", "b"])
    await fill(client, "two", ["c"])
    assert (await keys_of(client, "one"))[0] == ["a", "b"]
    assert (await keys_of(client, "two"))[0] == ["c"]


async def test_an_empty_or_unknown_bucket_lists_nothing(client):
    await upload(client, "b", "k", b"x")
    assert (await client.delete("/v1/files/b/k")).status_code == 200
    for bucket in ("b", "never-used"):
        response = await client.get(f"/v1/files/{bucket}")
        assert response.status_code == 200 and response.json() == {**response.json(), "data": [], "has_more": False}


async def test_prefix_keeps_only_the_keys_that_start_with_it(client, fast_disk):
    await fill(client, "b", MIXED_KEYS)
    for prefix in ["a", "a/", "a/b", "A", "9", "", "zzz", "a.", "a/b/c/"]:
        expected = sorted(key for key in MIXED_KEYS if key.startswith(prefix))
        assert await keys_of(client, "b", prefix=prefix) == (expected, False), prefix


async def test_after_keeps_only_the_keys_sorted_after_it(client, fast_disk):
    await fill(client, "b", MIXED_KEYS)
    for after in ["a", "a/b", "A", "", "0", "aa", "zzz", "-", "a/", "Z"]:
        expected = sorted(key for key in MIXED_KEYS if key > after)
        assert await keys_of(client, "b", after=after) == (expected, False), after


async def test_prefix_and_after_together(client, fast_disk):
    await fill(client, "b", MIXED_KEYS)
    for prefix, after in [("a", "a/b"), ("a/", "a"), ("a", "b"), ("a/", "a/b/c"), ("a", "a"), ("a/", "0"), ("a", "a0")]:
        expected = sorted(key for key in MIXED_KEYS if key.startswith(prefix) and key > after)
        assert await keys_of(client, "b", prefix=prefix, after=after) == (expected, False), (prefix, after)


async def test_limit_cuts_the_page_and_has_more_says_so(client, fast_disk):
    await fill(client, "b", MIXED_KEYS)
    everything = sorted(MIXED_KEYS)
    assert await keys_of(client, "b", limit=1) == (everything[:1], True)
    assert await keys_of(client, "b", limit=5) == (everything[:5], True)
    assert await keys_of(client, "b", limit=len(everything) - 1) == (everything[:-1], True)
    assert await keys_of(client, "b", limit=len(everything)) == (everything, False)
    assert await keys_of(client, "b", limit=10000) == (everything, False)


async def test_paging_with_after_the_last_key_walks_through_everything_once(client, fast_disk):
    await fill(client, "b", MIXED_KEYS)
    for limit in (1, 2, 3, 7):
        for prefix in ("", "a"):
            seen: list[str] = []
            query: dict[str, object] = {"limit": limit, "prefix": prefix}
            for _ in range(len(MIXED_KEYS) + 1):
                keys, has_more = await keys_of(client, "b", **query)
                assert len(keys) <= limit
                seen += keys
                if not has_more:
                    break
                query["after"] = keys[-1]
            else:
                pytest.fail("paging never ended")
            assert seen == sorted(key for key in MIXED_KEYS if key.startswith(prefix)), (limit, prefix)


async def test_the_default_page_is_1000_also_after_a_rebuild_of_over_1000_entries(client, redis, settings, fast_disk):
    """1001 entries are planted on the volume beside one uploaded file and found by the rebuild."""
    file = await upload(client, "b", "k0000", b"x", mime_type="text/plain")
    store = EntryStore(settings.data_dir / "entries")
    keys = [f"k{number:04d}" for number in range(1002)]
    for key in keys[1:]:
        store.put(Entry(bucket="b", key=key, mime_type="text/plain", bytes=1, created_at=1, digest=b3(b"x")))
    await redis.flushall()
    assert await keys_of(client, "b") == (keys[:1000], True)
    assert await keys_of(client, "b", after=keys[999]) == (keys[1000:], False)
    assert (await client.get("/v1/files/b/k1001")).json() == {
        **file,
        "key": "k1001",
        "url": content_url("b", "k1001"),
        "created_at": 1,
    }
    assert (await download(client, "b", "k1001")).content == b"x"


@pytest.mark.parametrize("limit", ["0", "10001", "abc", "-1", "", "1.5", "１", " 5", "99999999999999999999"])
async def test_a_bad_limit_is_400(client, limit):
    await upload(client, "b", "k", b"x")
    assert_error(await client.get("/v1/files/b", params={"limit": limit}), 400)


@pytest.mark.parametrize("bucket", ["b" * 64, "a.b", "b%20c", "b%C3%BC", "b*"])
async def test_listing_a_bad_bucket_is_400(client, bucket):
    assert_error(await client.get(f"/v1/files/{bucket}"), 400)


# --- GET and DELETE /v1/files/<bucket>/<key> -------------------------------------------------


async def test_file_info_is_the_file_response(client):
    file = await upload(client, "b", "a/b/c.json", b'{"x": 1}', mime_type="application/json")
    response = await client.get("/v1/files/b/a/b/c.json")
    assert response.status_code == 200 and response.json() == file
    assert file == {
        **file,
        "bucket": "b",
        "key": "a/b/c.json",
        "mime_type": "application/json",
        "url": content_url("b", "a/b/c.json"),
        "bytes": 8,
        "digest": "blake3:" + b3(b'{"x": 1}'),
    }


async def test_nested_keys_are_separate_files(client):
    await upload(client, "b", "a", b"parent")
    await upload(client, "b", "a/b", b"child")
    assert (await client.get("/v1/files/b/a")).json()["bytes"] == 6
    assert (await client.get("/v1/files/b/a/b")).json()["bytes"] == 5
    assert (await client.delete("/v1/files/b/a")).status_code == 200
    assert (await download(client, "b", "a/b")).content == b"child"
    assert_error(await client.get("/v1/files/b/a"), 404)


@pytest.mark.parametrize("path", ["/v1/files/b/missing", "/v1/files/other/k", "/v1/files/b/k/deeper", "/v1/files/b/K"])
async def test_info_of_a_missing_file_is_404(client, path):
    await upload(client, "b", "k", b"x")
    assert_error(await client.get(path), 404)


async def test_delete_returns_the_removed_file_and_the_key_is_gone(client, settings):
    file = await upload(client, "b", "k", b"content")
    assert len(entry_files(settings.data_dir)) == 1
    response = await client.delete("/v1/files/b/k")
    assert entry_files(settings.data_dir) == []
    assert response.status_code == 200 and response.json() == file
    assert_error(await client.get("/v1/files/b/k"), 404)
    assert_error(await download(client, "b", "k"), 404)
    assert (await keys_of(client, "b"))[0] == []
    assert_error(await client.delete("/v1/files/b/k"), 404)


async def test_delete_of_a_missing_file_is_404(client):
    assert_error(await client.delete("/v1/files/b/nothing"), 404)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/" + "b" * 64 + "/k",
        "/v1/files/a.b/k",
        "/v1/files/b/a//b",
        "/v1/files/b/a/",
        "/v1/files/b/a%20b",
        "/v1/files/b/%C3%A9",
        "/v1/files/b/" + "k" * 1025,
        "/v1/files/b/a/./b",
        "/v1/files/b/a/%2E%2E/b",
        "/v1/files/b/a:b",
    ],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_bad_name_in_the_path_is_400_or_404(client, method, path):
    await upload(client, "b", "k", b"x")
    response = await client.request(method, path)
    assert response.status_code in (400, 404), response.text
    assert_error(response, response.status_code)
    assert (await keys_of(client, "b"))[0] == ["k"]


# --- storage: shared content and deduplication -----------------------------------------------


async def test_content_shared_by_two_keys_survives_deleting_one(app, client, settings):
    await sweep(app)  # what the process does at start
    first = await upload(client, "b", "one", b"shared content")
    second = await upload(client, "c", "two", b"shared content")
    assert first["digest"] == second["digest"]
    assert (await client.delete("/v1/files/b/one")).status_code == 200
    await sweep(app)
    assert blob_path(settings.data_dir, first["digest"]).read_bytes() == b"shared content"
    assert (await download(client, "c", "two")).content == b"shared content"
    assert (await client.delete("/v1/files/c/two")).status_code == 200
    assert blob_files(settings.data_dir) == []


async def test_same_content_under_many_keys_and_buckets_is_stored_once(app, client, settings):
    content = b"the same bytes" * 1000
    for bucket in ("one", "two", "three"):
        for key in ("a", "b/c", "d.e"):
            await upload(client, bucket, key, content, chunk=4000)
    await upload(client, "one", "other", b"different")
    digest = b3(content)
    assert sorted(blob_files(settings.data_dir)) == sorted(
        [blob_path(settings.data_dir, digest), blob_path(settings.data_dir, b3(b"different"))]
    )
    assert blob_path(settings.data_dir, digest).read_bytes() == content
    for bucket in ("one", "two", "three"):
        assert (await download(client, bucket, "b/c")).content == content
    for bucket in ("one", "two", "three"):
        for key in ("a", "b/c", "d.e"):
            assert (await client.delete(f"/v1/files/{bucket}/{key}")).status_code == 200
            await sweep(app)
            still = not (bucket == "three" and key == "d.e")
            assert blob_path(settings.data_dir, digest).exists() is still
    assert blob_files(settings.data_dir) == [blob_path(settings.data_dir, b3(b"different"))]


async def test_delete_frees_the_blob_at_once_when_the_index_is_loaded(app, client, settings):
    await sweep(app)  # what the process does at start
    file = await upload(client, "b", "k", b"to be freed")
    assert blob_path(settings.data_dir, file["digest"]).is_file()
    assert (await client.delete("/v1/files/b/k")).status_code == 200
    assert blob_files(settings.data_dir) == []


# --- Redis loses its data ---------------------------------------------------------------------


async def test_after_redis_loses_its_data_every_file_is_listed_and_served(app, client, redis, settings):
    await fill(client, "b", MIXED_KEYS)
    await fill(client, "c", ["x", "y/z"])
    await upload(client, "c", "shared", b"a")  # same content as b/a
    await redis.flushall()
    assert await bucket_names(client) == ["b", "c"]
    assert await keys_of(client, "b") == (sorted(MIXED_KEYS), False)
    assert await keys_of(client, "c", limit=2) == (["shared", "x"], True)
    assert await keys_of(client, "c", prefix="y/") == (["y/z"], False)
    info = await client.get("/v1/files/b/a/b")
    assert info.status_code == 200 and info.json()["digest"] == "blake3:" + b3(b"a/b")
    assert (await download(client, "c", "y/z")).content == b"y/z"


async def test_after_redis_loses_its_data_info_and_download_work_before_any_listing(client, redis):
    file = await upload(client, "b", "k", b"content")
    await redis.flushall()
    assert (await client.get("/v1/files/b/k")).json() == file
    assert (await download(client, "b", "k")).content == b"content"


async def test_after_redis_loses_its_data_new_uploads_and_deletes_agree_with_the_volume(app, client, redis, settings):
    await fill(client, "b", ["old1", "old2"])
    shared = await upload(client, "b", "shared1", b"shared")
    await upload(client, "b", "shared2", b"shared")
    await redis.flushall()
    await upload(client, "b", "new", b"new")
    assert (await client.delete("/v1/files/b/old1")).status_code == 200
    assert await keys_of(client, "b") == (["new", "old2", "shared1", "shared2"], False)
    assert await bucket_names(client) == ["b"]
    await sweep(app)
    assert not blob_path(settings.data_dir, b3(b"old1")).exists()
    assert (await client.delete("/v1/files/b/shared1")).status_code == 200
    await sweep(app)
    assert blob_path(settings.data_dir, shared["digest"]).exists()
    assert (await download(client, "b", "shared2")).content == b"shared"
    assert (await client.delete("/v1/files/b/shared2")).status_code == 200
    await sweep(app)
    assert not blob_path(settings.data_dir, shared["digest"]).exists()


async def test_another_process_sees_the_files_of_the_first(make_app, redis):
    async with http_client(make_app()) as one, http_client(make_app()) as two:
        file = await upload(one, "b", "k", b"from one")
        assert (await two.get("/v1/files/b/k")).json() == file
        assert (await keys_of(two, "b"))[0] == ["k"]
        assert (await download(two, "b", "k")).content == b"from one"
        assert (await two.delete("/v1/files/b/k")).status_code == 200
        assert_error(await one.get("/v1/files/b/k"), 404)
        assert await bucket_names(one) == []
