"""The IETF draft "Resumable Uploads for HTTP" at /tus/, through HTTP: each status and header it names,
for the latest draft (-11, interop version 8) and the older interop versions served."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from apihelpers import b3, download, partial_path, session_path, stream
from conftest import BASE_URL, http_client

from service.core.auth import new_token

pytestmark = pytest.mark.anyio

LATEST = {"Upload-Draft-Interop-Version": "8"}
PARTIAL = "application/partial-upload"
PROBLEMS = "https://iana.org/assignments/http-problem-types#"


def metadata(**pairs: str) -> str:
    return ",".join(f"{name} {base64.b64encode(value.encode()).decode()}" for name, value in pairs.items())


async def create(client: httpx.AsyncClient, complete: bool, content: bytes = b"", **headers: str) -> httpx.Response:
    return await client.post(
        "/tus/", content=content, headers={**LATEST, "Upload-Complete": "?1" if complete else "?0", **headers}
    )


async def new_upload(client: httpx.AsyncClient, **headers: str) -> str:
    """Create an incomplete upload that must be accepted; returns its path (/tus/<id>)."""
    response = await create(client, False, **headers)
    assert response.status_code == 201, response.text
    assert response.headers["location"].startswith(f"{BASE_URL}/tus/")
    return response.headers["location"].removeprefix(BASE_URL)


async def append(
    client: httpx.AsyncClient,
    path: str,
    offset: int,
    content: bytes | AsyncIterator[bytes],
    complete: bool,
    **headers: str,
) -> httpx.Response:
    return await client.patch(
        path,
        content=content,
        headers={
            **LATEST,
            "Upload-Offset": str(offset),
            "Upload-Complete": "?1" if complete else "?0",
            "Content-Type": PARTIAL,
            **headers,
        },
    )


def problem(response: httpx.Response, status: int, kind: str = "about:blank") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if response.request.method == "HEAD":
        return {}
    body = response.json()
    assert (body["type"], body["status"]) == (kind if kind == "about:blank" else PROBLEMS + kind, status)
    assert body["title"] and body["detail"]
    return body


async def test_options_announce_partial_uploads_and_the_limits(client, settings):
    response = await client.options("/tus/", headers=LATEST)
    assert response.status_code == 204
    assert response.headers["accept-patch"] == PARTIAL
    assert (
        response.headers["upload-limit"]
        == f"max-size={settings.max_upload_bytes}, max-age={settings.session_ttl_seconds}"
    )
    assert response.headers["upload-draft-interop-version"] == "8"
    assert "tus-resumable" not in response.headers


@pytest.mark.parametrize(("version", "limits"), [("6", True), ("5", False), ("3", False)])
async def test_upload_limit_as_each_draft_names_it(client, settings, version, limits):
    response = await client.options("/tus/", headers={"Upload-Draft-Interop-Version": version})
    assert response.headers["upload-draft-interop-version"] == version
    if limits:
        assert (
            response.headers["upload-limit"]
            == f"max-size={settings.max_upload_bytes}, expires={settings.session_ttl_seconds}"
        )
    else:
        assert "upload-limit" not in response.headers


@pytest.mark.parametrize("version", ["2", "9", "x", ""])
async def test_an_interop_version_not_served_is_400(client, version):
    response = await create(client, True, b"x", **{"Upload-Draft-Interop-Version": version})
    assert "3, 4, 5, 6, 7, 8" in problem(response, 400)["detail"]


async def test_an_upload_in_parts_becomes_a_file(client, settings):
    content = b"0123456789" * 1000
    pairs = {"bucket": "docs", "key": "a/b.txt", "filetype": "text/plain"}
    created = await create(
        client, False, content[:1000], **{"Upload-Length": str(len(content))}, **{"Upload-Metadata": metadata(**pairs)}
    )
    assert created.status_code == 201, created.text
    assert (created.headers["upload-offset"], created.headers["upload-complete"]) == ("1000", "?0")
    assert created.headers["upload-limit"].startswith(f"max-size={settings.max_upload_bytes}, max-age=")
    path = created.headers["location"].removeprefix(BASE_URL)
    second = await append(client, path, 1000, content[1000:4000], complete=False)
    assert second.status_code == 204
    assert (second.headers["upload-offset"], second.headers["upload-complete"]) == ("4000", "?0")
    offset = await client.head(path, headers=LATEST)
    assert offset.status_code == 204
    assert offset.headers["upload-offset"] == "4000"
    assert offset.headers["upload-complete"] == "?0"
    assert offset.headers["upload-length"] == str(len(content))
    assert offset.headers["cache-control"] == "no-store"
    assert "max-size=" in offset.headers["upload-limit"]
    last = await append(client, path, 4000, content[4000:], complete=True)
    assert last.status_code == 204, last.text
    assert (last.headers["upload-offset"], last.headers["upload-complete"]) == (str(len(content)), "?1")
    done = await client.head(path, headers=LATEST)
    assert (done.headers["upload-offset"], done.headers["upload-complete"]) == (str(len(content)), "?1")
    got = await download(client, "docs", "a/b.txt")
    assert (got.content, got.headers["content-type"]) == (content, "text/plain")
    info = (await client.get("/v1/files/docs/a/b.txt")).json()
    assert (info["metadata"], info["digest"]) == (pairs, f"blake3:{b3(content)}")


async def test_a_whole_upload_in_the_creation_request_with_the_defaults(client):
    created = await create(client, True, b"whole")
    assert created.status_code == 201, created.text
    assert (created.headers["upload-offset"], created.headers["upload-complete"]) == ("5", "?1")
    upload_id = created.headers["location"].rsplit("/", 1)[1]
    info = (await client.get(f"/v1/files/uploads/{upload_id}")).json()
    assert (info["bytes"], info["mime_type"], info["metadata"]) == (5, "application/octet-stream", {})
    assert (await download(client, "uploads", upload_id)).content == b"whole"


async def test_an_empty_upload(client):
    created = await create(client, True)
    assert (created.status_code, created.headers["upload-complete"]) == (201, "?1")
    assert (await download(client, "uploads", created.headers["location"].rsplit("/", 1)[1])).content == b""


async def test_the_upload_is_a_session_of_the_seeds_api(client):
    path = await new_upload(client, **{"Upload-Length": "10"})
    assert (await append(client, path, 0, b"01234", complete=False)).status_code == 204
    upload_id = path.rsplit("/", 1)[1]
    session = (await client.get(session_path(upload_id))).json()
    assert (session["id"], session["offset"], session["size"]) == (upload_id, 5, 10)


async def test_a_length_learned_from_a_completing_request_of_no_content_length(client):
    path = await new_upload(client)
    assert "upload-length" not in (await client.head(path, headers=LATEST)).headers
    assert (await append(client, path, 0, b"abc", complete=False)).status_code == 204
    last = await append(client, path, 3, stream(b"de", b"fg"), complete=True)
    assert (last.status_code, last.headers["upload-offset"], last.headers["upload-complete"]) == (204, "7", "?1")
    assert (await download(client, "uploads", path.rsplit("/", 1)[1])).content == b"abcdefg"


async def test_an_empty_completing_append(client):
    path = await new_upload(client)
    assert (await append(client, path, 0, b"abc", complete=False)).status_code == 204
    last = await append(client, path, 3, b"", complete=True)
    assert (last.status_code, last.headers["upload-complete"]) == (204, "?1")
    assert (await client.head(path, headers=LATEST)).headers["upload-length"] == "3"


async def test_409_mismatching_offset_as_problem_details(client):
    path = await new_upload(client, **{"Upload-Length": "10"})
    assert (await append(client, path, 0, b"01234", complete=False)).status_code == 204
    response = await append(client, path, 7, b"789", complete=True)
    body = problem(response, 409, "mismatching-upload-offset")
    assert (body["expected-offset"], body["provided-offset"]) == (5, 7)
    assert response.headers["upload-offset"] == "5"
    assert (await client.head(path, headers=LATEST)).headers["upload-offset"] == "5"


async def test_an_append_to_a_completed_upload_is_refused(client):
    """An empty one is a completed-upload problem; one with bytes an inconsistent length (-11, 4.4.2)."""
    path = await new_upload(client)
    assert (await append(client, path, 0, b"ab", complete=True)).status_code == 204
    problem(await append(client, path, 2, b"", complete=False), 400, "completed-upload")
    problem(await append(client, path, 2, b"more", complete=False), 400, "inconsistent-upload-length")
    problem(await append(client, path, 2, stream(b"more"), complete=True), 400, "inconsistent-upload-length")
    assert (await download(client, "uploads", path.rsplit("/", 1)[1])).content == b"ab"


async def test_a_request_past_the_length_ends_the_upload(client, settings):
    """-11, 4.4.2: the offset never passes the length; the upload is then invalid, any later request refused."""
    path = await new_upload(client, **{"Upload-Length": "10"})
    assert (await append(client, path, 0, b"abc", complete=False)).status_code == 204
    for content in (b"defghijklm", stream(b"defghijklm")):  # declared too long, or found so as it streams
        upload = await new_upload(client, **{"Upload-Length": "10"})
        await append(client, upload, 0, b"abc", complete=False)
        problem(await append(client, upload, 3, content, complete=False), 400, "inconsistent-upload-length")
        assert (await client.head(upload, headers=LATEST)).status_code == 404
        problem(await append(client, upload, 3, b"d", complete=False), 404)
    assert (await client.head(path, headers=LATEST)).headers["upload-offset"] == "3"  # another upload: untouched
    created = await create(client, False, b"abcdef", **{"Upload-Length": "4"})
    problem(created, 400, "inconsistent-upload-length")
    assert (await client.get("/v1/files/uploads")).json()["data"] == []


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
async def test_an_invalid_upload_length_is_ignored(client, value):
    """-11, 4.1.3: other values MUST cause the entire header field to be ignored (parameters are allowed)."""
    path = await new_upload(client, **{"Upload-Length": value})
    assert "upload-length" not in (await client.head(path, headers=LATEST)).headers
    with_parameter = await new_upload(client, **{"Upload-Length": "5;x=1"})
    assert (await client.head(with_parameter, headers=LATEST)).headers["upload-length"] == "5"


async def test_the_creation_request_s_content_type_is_the_file_s(client):
    created = await create(client, True, b"hello", **{"Content-Type": "text/plain"})
    assert created.status_code == 201, created.text
    key = created.headers["location"].rsplit("/", 1)[1]
    assert (await download(client, "uploads", key)).headers["content-type"] == "text/plain"
    named = await create(
        client, True, b"x", **{"Content-Type": "text/plain", "Upload-Metadata": metadata(filetype="image/png")}
    )
    key = named.headers["location"].rsplit("/", 1)[1]
    assert (await download(client, "uploads", key)).headers["content-type"] == "image/png"


async def test_an_upload_complete_at_its_length_takes_the_empty_completing_append(client):
    path = await new_upload(client, **{"Upload-Length": "4"})
    last_bytes = await append(client, path, 0, b"abcd", complete=False)
    assert (last_bytes.status_code, last_bytes.headers["upload-complete"]) == (204, "?1")
    completing = await append(client, path, 4, b"", complete=True)
    assert (completing.status_code, completing.headers["upload-offset"], completing.headers["upload-complete"]) == (
        204,
        "4",
        "?1",
    )
    problem(await append(client, path, 3, b"", complete=True), 400, "completed-upload")
    problem(await append(client, path, 4, b"e", complete=True), 400, "inconsistent-upload-length")
    assert (await download(client, "uploads", path.rsplit("/", 1)[1])).content == b"abcd"


async def test_inconsistent_lengths_are_400(client, settings):
    refused = await create(client, True, b"abc", **{"Upload-Length": "10"})
    problem(refused, 400, "inconsistent-upload-length")
    assert (await client.get("/v1/files/uploads")).json()["data"] == []
    path = await new_upload(client, **{"Upload-Length": "10"})
    short = await append(client, path, 0, stream(b"abc"), complete=True)
    problem(short, 400, "inconsistent-upload-length")
    assert short.headers["upload-offset"] == "3"  # what arrived is kept
    other = await append(client, path, 3, b"d", complete=False, **{"Upload-Length": "11"})
    problem(other, 400, "inconsistent-upload-length")
    assert (await append(client, path, 3, b"defghij", complete=True)).status_code == 204


async def test_413_over_the_limit_with_upload_limit(make_app):
    async with http_client(make_app(max_upload_bytes=100)) as client:
        response = await create(client, False, **{"Upload-Length": "101"})
        problem(response, 413)
        assert response.headers["upload-limit"].startswith("max-size=100,")
        path = await new_upload(client)
        too_much = await append(client, path, 0, b"x" * 101, complete=True)
        problem(too_much, 413)
        assert too_much.headers["upload-limit"].startswith("max-size=100,")


async def test_an_append_needs_the_partial_upload_type_since_interop_6(client):
    path = await new_upload(client)
    refused = await append(client, path, 0, b"a", complete=False, **{"Content-Type": "application/octet-stream"})
    problem(refused, 415)
    assert refused.headers["accept-patch"] == PARTIAL
    older = await append(
        client, path, 0, b"a", complete=True, **{"Upload-Draft-Interop-Version": "5", "Content-Type": ""}
    )
    assert (older.status_code, older.headers["upload-complete"]) == (204, "?1")


@pytest.mark.parametrize("header", [{}, {"Upload-Complete": "1"}, {"Upload-Complete": "?true"}])
async def test_a_request_must_say_whether_it_completes(client, header):
    response = await client.post("/tus/", content=b"x", headers={**LATEST, **header})
    assert "Upload-Complete" in problem(response, 400)["detail"]
    path = await new_upload(client)
    response = await client.patch(
        path, content=b"x", headers={**LATEST, "Upload-Offset": "0", "Content-Type": PARTIAL, **header}
    )
    problem(response, 400)


async def test_an_append_needs_an_offset(client):
    path = await new_upload(client)
    response = await client.patch(
        path, content=b"x", headers={**LATEST, "Upload-Complete": "?1", "Content-Type": PARTIAL}
    )
    assert "Upload-Offset" in problem(response, 400)["detail"]


async def test_delete_cancels_the_upload(client):
    path = await new_upload(client)
    assert (await append(client, path, 0, b"ab", complete=False)).status_code == 204
    assert (await client.delete(path, headers=LATEST)).status_code == 204
    problem(await client.head(path, headers=LATEST), 404)
    problem(await append(client, path, 2, b"c", complete=True), 404)


@pytest.mark.parametrize(
    ("version", "header", "complete", "incomplete"),
    [
        ("3", "Upload-Incomplete", "?0", "?1"),
        ("4", "Upload-Incomplete", "?0", "?1"),
        ("5", "Upload-Complete", "?1", "?0"),
        ("7", "Upload-Complete", "?1", "?0"),
    ],
)
async def test_completeness_in_each_interop_version(client, version, header, complete, incomplete):
    draft = {"Upload-Draft-Interop-Version": version}
    created = await client.post("/tus/", content=b"ab", headers={**draft, header: incomplete, "Upload-Length": "4"})
    assert (created.status_code, created.headers[header], created.headers["upload-draft-interop-version"]) == (
        201,
        incomplete,
        version,
    )
    path = created.headers["location"].removeprefix(BASE_URL)
    assert (await client.head(path, headers=draft)).headers[header] == incomplete
    last = await client.patch(
        path, content=b"cd", headers={**draft, header: complete, "Upload-Offset": "2", "Content-Type": PARTIAL}
    )
    assert (last.status_code, last.headers[header]) == (204, complete)
    assert (await client.head(path, headers=draft)).headers[header] == complete
    assert (await download(client, "uploads", path.rsplit("/", 1)[1])).content == b"abcd"


async def test_bad_upload_metadata_is_400_and_nothing_is_stored(client):
    response = await create(client, True, b"x", **{"Upload-Metadata": "key bm90IGEga2V5Lw=="})  # 'not a key/'
    problem(response, 400)
    assert (await client.get("/v1/files")).json()["data"] == []


async def test_tus_requests_are_still_tus(client):
    response = await client.options("/tus/")
    assert response.headers["tus-version"] == "1.0.0"
    assert "upload-draft-interop-version" not in response.headers


ISSUED = {
    name: new_token(name, grants) for name, grants in [("writer", None), ("other", None), ("reader", {"*": ["read"]})]
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ISSUED[name][0]}"}


async def test_tokens_as_everywhere(make_app, tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry for _, entry in ISSUED.values()]}))
    async with http_client(make_app(auth_tokens_file=path)) as client:
        problem(await create(client, True, b"x"), 401)
        problem(await create(client, True, b"x", **bearer("reader")), 403)
        upload = await new_upload(client, **bearer("writer"))
        problem(await client.head(upload, headers={**LATEST, **bearer("other")}), 404)
        problem(await append(client, upload, 0, b"x", complete=True, **bearer("other")), 404)
        problem(await client.delete(upload, headers={**LATEST, **bearer("other")}), 404)
        assert (await append(client, upload, 0, b"x", complete=True, **bearer("writer"))).status_code == 204


async def test_cors_preflight_without_a_token_and_every_request_readable(make_app, tmp_path):
    """From a page on an allowed origin, with tokens on: each preflight passes with no token, and
    each request of the draft (errors too) lets the page read the draft's and tus's headers."""
    origin = "https://app.example"
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [entry for _, entry in ISSUED.values()]}))
    writer = {"Origin": origin, **bearer("writer")}
    async with http_client(make_app(cors_origins=(origin,), auth_tokens_file=path)) as client:
        requested = "authorization,content-type,upload-draft-interop-version,upload-complete,upload-incomplete,"
        requested += "upload-length,upload-offset,upload-metadata,upload-defer-length,x-request-id"
        for method, target in [("POST", "/tus/"), ("PATCH", "/tus/x"), ("HEAD", "/tus/x"), ("DELETE", "/tus/x")]:
            preflight = await client.options(
                target,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": requested,
                },
            )
            assert preflight.status_code == 200, (method, preflight.text)
            assert preflight.headers["access-control-allow-origin"] == origin
            assert method in preflight.headers["access-control-allow-methods"]
        created = await create(client, False, **writer)
        upload = created.headers["location"].removeprefix(BASE_URL)
        answers = [
            created,
            await client.options("/tus/", headers={**LATEST, **writer}),
            await append(client, upload, 0, b"ab", complete=False, **writer),
            await append(client, upload, 5, b"c", complete=True, **writer),  # 409, a problem
            await client.head(upload, headers={**LATEST, **writer}),
            await client.delete(upload, headers={**LATEST, **writer}),
        ]
        assert [answer.status_code for answer in answers] == [201, 204, 204, 409, 204, 204]
        for answer in answers:
            assert answer.headers["access-control-allow-origin"] == origin
            exposed = {name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")}
            assert {
                "location",
                "upload-offset",
                "upload-length",
                "upload-expires",
                "upload-complete",
                "upload-incomplete",
                "upload-limit",
                "upload-draft-interop-version",
                "accept-patch",
                "tus-resumable",
                "tus-version",
                "tus-max-size",
            } <= exposed


async def test_an_upload_whose_bytes_were_lost_is_no_longer_active(client, settings):
    """The draft's offset never decreases: where the seed's API restarts a session at 0, the draft's
    upload ends (404, as a cancelled one), and its client creates a new one."""
    path = await new_upload(client)
    assert (await append(client, path, 0, b"abcd", complete=False)).status_code == 204
    partial_path(settings.data_dir, path.rsplit("/", 1)[1]).unlink()  # lost: removed by hand, a volume replaced
    response = await append(client, path, 4, b"efgh", complete=True)
    assert "create a new upload" in problem(response, 404)["detail"]
    assert "upload-offset" not in response.headers
    problem(await client.head(path, headers=LATEST), 404)
    again = await new_upload(client)
    assert (await append(client, again, 0, b"abcdefgh", complete=True)).status_code == 204
    assert (await download(client, "uploads", again.rsplit("/", 1)[1])).content == b"abcdefgh"
