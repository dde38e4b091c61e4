"""Downloads through HTTP: GET and HEAD of `:content`, byte ranges and conditional requests."""

from __future__ import annotations

import os

import pytest
from apihelpers import asgi_scope, assert_error, b3, download, upload

pytestmark = [pytest.mark.anyio, pytest.mark.in_memory]

CONTENT = os.urandom(3 * 1024 * 1024 + 123)  # over one read of the streamer
SIZE = len(CONTENT)
ETAG = f'"{b3(CONTENT)}"'


@pytest.fixture
async def stored(client):
    """A file of SIZE random bytes at b/dir/file.bin."""
    return await upload(client, "b", "dir/file.bin", CONTENT, chunk=1024 * 1024)


def assert_content_headers(response, mime_type: str, length: int) -> None:
    assert response.headers["content-type"] == mime_type
    assert response.headers["content-length"] == str(length)
    assert response.headers["etag"] == ETAG
    assert response.headers["accept-ranges"] == "bytes"


# --- the whole file --------------------------------------------------------------------------


async def test_get_sends_the_exact_bytes_and_headers(client, stored):
    response = await download(client, "b", "dir/file.bin")
    assert response.status_code == 200
    assert response.content == CONTENT
    assert_content_headers(response, "application/octet-stream", SIZE)


async def asgi_call(app, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Call the app as a server would and return (status, every body byte it sent).

    httpx's ASGI transport drops a HEAD response's body itself, so it cannot show one that was sent.
    """
    scope = asgi_scope(method, path, [(name.lower().encode(), value.encode()) for name, value in headers.items()])
    messages = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        messages.append(message)

    await app(scope, receive, send)
    status = next(message["status"] for message in messages if message["type"] == "http.response.start")
    return status, b"".join(message.get("body", b"") for message in messages if message["type"] == "http.response.body")


async def test_head_sends_the_headers_without_a_body(app, client, stored):
    response = await client.head("/v1/files/b/dir/file.bin:content")
    assert response.status_code == 200
    assert_content_headers(response, "application/octet-stream", SIZE)
    for headers, status in (({}, 200), ({"Range": "bytes=0-99"}, 206)):
        assert await asgi_call(app, "HEAD", "/v1/files/b/dir/file.bin:content", headers) == (status, b"")
    assert await asgi_call(app, "GET", "/v1/files/b/dir/file.bin:content", {"Range": "bytes=0-99"}) == (
        206,
        CONTENT[:100],
    )


@pytest.mark.parametrize(
    "mime_type",
    [
        "text/plain",
        "text/html",
        "application/json",
        "text/plain; charset=iso-8859-1",
        "image/svg+xml",
        "application/vnd.example.v1+json",
        'text/plain; format="flowed"',
    ],
)
async def test_content_type_is_exactly_the_mime_type(client, mime_type):
    content = "héllo\n".encode("latin-1")
    await upload(client, "b", "k", content, mime_type=mime_type)
    for response in (await download(client, "b", "k"), await client.head("/v1/files/b/k:content")):
        assert response.status_code == 200
        assert response.headers["content-type"] == mime_type
        assert len(response.headers.get_list("content-type")) == 1
    assert (await download(client, "b", "k")).content == content


async def test_an_empty_file_downloads_empty(client):
    await upload(client, "b", "empty", b"", mime_type="text/plain")
    response = await download(client, "b", "empty")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "0"
    assert response.headers["etag"] == f'"{b3(b"")}"'
    assert response.headers["content-type"] == "text/plain"


async def test_a_missing_file_is_404(client, stored):
    for path in ("/v1/files/b/nothing:content", "/v1/files/other/dir/file.bin:content", "/v1/files/b/dir:content"):
        assert_error(await client.get(path), 404)
        assert (await client.head(path)).status_code == 404


async def test_a_deleted_file_is_404(client, stored):
    assert (await client.delete("/v1/files/b/dir/file.bin")).status_code == 200
    assert_error(await download(client, "b", "dir/file.bin"), 404)
    assert (await client.head("/v1/files/b/dir/file.bin:content")).status_code == 404


async def test_a_bad_name_is_400_or_404(client, stored):
    for path in (
        "/v1/files/b/a//b:content",
        "/v1/files/b.c/k:content",
        "/v1/files/b/:content",
        "/v1/files/b/a%20b:content",
    ):
        response = await client.get(path)
        assert_error(response, response.status_code)
        assert response.status_code in (400, 404)


# --- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, first, last",
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=1048570-1048580", 1048570, 1048580),  # across a read boundary
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
        (f"bytes=100-{SIZE + 1000}", 100, SIZE - 1),  # a last byte past the end is cut to it
        ("bytes=1000-", 1000, SIZE - 1),
        ("bytes=0-", 0, SIZE - 1),
        ("bytes=-1", SIZE - 1, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        (f"bytes=-{SIZE + 10}", 0, SIZE - 1),  # a suffix longer than the file is all of it
    ],
)
async def test_one_range_is_206_with_the_exact_slice(client, stored, header, first, last):
    response = await download(client, "b", "dir/file.bin", Range=header)
    assert response.status_code == 206, response.text
    assert response.content == CONTENT[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert_content_headers(response, "application/octet-stream", last - first + 1)
    head = await client.head("/v1/files/b/dir/file.bin:content", headers={"Range": header})
    assert head.status_code == 206 and head.content == b""
    assert head.headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert head.headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE}-{SIZE + 10}", f"bytes={SIZE + 5000}-", "bytes=-0"])
async def test_a_range_that_misses_the_file_is_416(client, stored, header):
    response = await download(client, "b", "dir/file.bin", Range=header)
    assert_error(response, 416)
    assert response.headers["content-range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=0-", "bytes=0-0", "bytes=5-10"])
async def test_a_range_on_an_empty_file_is_416(client, header):
    await upload(client, "b", "empty", b"")
    response = await download(client, "b", "empty", Range=header)
    assert_error(response, 416)
    assert response.headers["content-range"] == "bytes */0"


async def test_a_suffix_range_on_an_empty_file_is_not_a_206(client):
    """RFC 9110 calls `bytes=-n` satisfiable on an empty file, yet no 206 can express it: 200 or 416 will do."""
    await upload(client, "b", "empty", b"")
    response = await download(client, "b", "empty", Range="bytes=-5")
    assert response.status_code in (200, 416)
    if response.status_code == 416:
        assert response.headers["content-range"] == "bytes */0"
    else:
        assert response.content == b""


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",  # more than one range
        "bytes=0-1, 3-",
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "bytes=5-2",  # last before first: not a valid byte range
        "items=0-1",
        "0-1",
        "bytes 0-1",
        "bytes=1-2-3",
        "bytes=0x10-",
    ],
)
async def test_a_malformed_or_multi_range_header_is_ignored_and_the_whole_file_sent(client, stored, header):
    response = await download(client, "b", "dir/file.bin", Range=header)
    assert response.status_code == 200
    assert response.content == CONTENT
    assert "content-range" not in response.headers
    assert_content_headers(response, "application/octet-stream", SIZE)


# --- conditional requests --------------------------------------------------------------------


@pytest.mark.parametrize("header", [ETAG, f"W/{ETAG}", "*", f'"other", {ETAG}', f'"a",W/{ETAG} ,"b"'])
async def test_if_none_match_with_the_etag_is_304(client, stored, header):
    for method in ("GET", "HEAD"):
        response = await client.request(method, "/v1/files/b/dir/file.bin:content", headers={"If-None-Match": header})
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == ETAG


async def test_if_none_match_wins_over_range(client, stored):
    response = await download(client, "b", "dir/file.bin", **{"If-None-Match": ETAG, "Range": "bytes=0-9"})
    assert response.status_code == 304 and response.content == b""


@pytest.mark.parametrize("header", ['"other"', b3(CONTENT), f'"{b3(CONTENT)[:-1]}"', '""'])
async def test_if_none_match_with_another_etag_sends_the_file(client, stored, header):
    response = await download(client, "b", "dir/file.bin", **{"If-None-Match": header})
    assert response.status_code == 200 and response.content == CONTENT


async def test_if_range_with_the_etag_sends_the_range(client, stored):
    response = await download(client, "b", "dir/file.bin", **{"If-Range": ETAG, "Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.content == CONTENT[10:20]


@pytest.mark.parametrize("validator", ['"other"', f"W/{ETAG}", "Sat, 28 Nov 2026 10:00:00 GMT"])
async def test_if_range_with_another_validator_sends_the_whole_file(client, stored, validator):
    """A client resuming a download of a key that got new content since gets all of the new content."""
    response = await download(client, "b", "dir/file.bin", **{"If-Range": validator, "Range": "bytes=10-19"})
    assert response.status_code == 200
    assert response.content == CONTENT
    assert "content-range" not in response.headers


async def test_the_etag_changes_when_the_key_gets_new_content(client, stored):
    await upload(client, "b", "dir/file.bin", b"new")
    response = await download(client, "b", "dir/file.bin", **{"If-None-Match": ETAG})
    assert response.status_code == 200 and response.content == b"new"
    assert response.headers["etag"] == f'"{b3(b"new")}"'


async def test_a_missing_file_is_404_whatever_the_conditions(client):
    response = await download(client, "b", "nothing", **{"If-None-Match": "*", "Range": "bytes=0-1"})
    assert_error(response, 404)
