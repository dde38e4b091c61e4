"""Errors, health and the OpenAPI document: every error is JSON with a `detail`, and the document tells the truth."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import anyio
import httpx
import pytest
from apihelpers import assert_error, b3, send, session_path, start, start_session, upload
from conftest import BASE_URL, http_client

from service.core.catalog import Catalog

pytestmark = pytest.mark.anyio

# Every route of the contract, as the OpenAPI document must name it.
CONTRACT_ROUTES = {
    ("/v1/files", "post"),
    ("/v1/files", "get"),
    ("/v1/files/session:{session_id}", "post"),
    ("/v1/files/session:{session_id}", "get"),
    ("/v1/files/session:{session_id}", "delete"),
    ("/v1/files/{bucket}", "get"),
    ("/v1/files/{bucket}/{key}", "get"),
    ("/v1/files/{bucket}/{key}", "delete"),
    ("/v1/files/{bucket}/{key}:content", "get"),
    ("/v1/files/{bucket}/{key}:content", "head"),
    ("/healthz", "get"),
    ("/readyz", "get"),
}


def raw_client(app) -> httpx.AsyncClient:
    """A client that gets the 500 response instead of the app's exception."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE_URL)


# --- routes and methods ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ui", "/nope", "/v1", "/v1/other", "/v2/files", "/healthz/x"])
async def test_an_unknown_route_is_404_json(client, path):
    assert_error(await client.get(path), 404)


@pytest.mark.parametrize(
    "method, path",
    [
        ("PUT", "/v1/files"),
        ("DELETE", "/v1/files"),
        ("PATCH", "/v1/files/session:" + "0" * 32),
        ("PUT", "/v1/files/session:" + "0" * 32),
        ("POST", "/v1/files/b"),
        ("DELETE", "/v1/files/b"),
        ("POST", "/v1/files/b/k"),
        ("PUT", "/v1/files/b/k"),
        ("DELETE", "/v1/files/b/k:content"),
        ("POST", "/v1/files/b/k:content"),
        ("PUT", "/v1/files/b/k:content"),
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
    ],
)
async def test_a_wrong_method_is_405_json(client, method, path):
    await upload(client, "b", "k", b"x")
    assert_error(await client.request(method, path), 405)


async def test_delete_on_content_is_405_and_leaves_the_file(client):
    await upload(client, "b", "k", b"x")
    assert_error(await client.delete("/v1/files/b/k:content"), 405)
    assert (await client.get("/v1/files/b/k:content")).content == b"x"


@pytest.mark.parametrize("header", ["abc", "-1", "1.5", "0x10", "", "+1", "1 2"])
async def test_a_bad_upload_offset_header_is_400_and_stores_nothing(client, header):
    session_id = await start_session(client, "b", "k", 10)
    assert_error(await client.post(session_path(session_id), content=b"abc", headers={"Upload-Offset": header}), 400)
    assert (await client.get(session_path(session_id))).json()["offset"] == 0


async def test_a_json_body_too_big_for_any_session_request_is_refused(client):
    payload = {"bucket": "b", "key": "k", "mime_type": "text/plain", "size": 1, "padding": "x" * 1_000_000}
    response = await client.post("/v1/files", json=payload)
    assert response.status_code in (400, 413)
    assert_error(response, response.status_code)


# --- 500 -------------------------------------------------------------------------------------


async def test_an_unexpected_error_is_a_500_without_internals_and_is_logged(make_app, monkeypatch, caplog):
    async def broken_get(self, bucket: str, key: str):
        raise RuntimeError("secret-internal-detail")

    monkeypatch.setattr(Catalog, "get", broken_get)
    caplog.set_level(logging.ERROR)
    async with raw_client(make_app()) as client:
        response = await client.get("/v1/files/b/k")
    assert_error(response, 500)
    assert "secret-internal-detail" not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text
    logged = [
        record for record in caplog.records if record.exc_info and "secret-internal-detail" in str(record.exc_info[1])
    ]
    assert logged, [record.getMessage() for record in caplog.records]
    assert logged[0].levelno >= logging.ERROR


# --- Redis down ------------------------------------------------------------------------------


async def test_with_redis_down_the_routes_that_need_it_answer_503_json(client, redis_server):
    session_id = await start_session(client, "b", "k", 10)
    await upload(client, "b", "file", b"x")
    redis_server.connected = False
    requests = [
        ("POST", "/v1/files", {"json": {"bucket": "b", "key": "k2", "mime_type": "text/plain", "size": 3}}),
        ("GET", "/v1/files", {}),
        ("GET", "/v1/files/b", {}),
        ("POST", session_path(session_id), {"content": b"abc"}),
        ("GET", session_path(session_id), {}),
        ("DELETE", session_path(session_id), {}),
        ("DELETE", "/v1/files/b/file", {}),
    ]
    for method, path, arguments in requests:
        assert_error(await client.request(method, path, **arguments), 503)
    assert_error(await client.get("/readyz"), 503)
    assert (await client.get("/healthz")).status_code == 200
    redis_server.connected = True
    assert (await client.get(session_path(session_id))).json()["offset"] == 0
    assert (await client.get("/v1/files/b/file")).status_code == 200


async def test_a_redis_error_mid_upload_keeps_the_session_resumable(make_app, redis_server):
    """Redis breaks while a chunk is received; once it is back, the client resumes at the offset reported.

    The session's lock may be left behind (it could not be released while Redis was down): it is a
    lease, so retries get 409 until it runs out. The lease is short here to keep the test fast.
    """

    async def body():
        yield b"abc"
        redis_server.connected = False

    async with http_client(make_app(lock_lease_seconds=0.3)) as client:
        session_id = await start_session(client, "b", "k", 6)
        assert_error(await send(client, session_id, body()), 503)
        redis_server.connected = True
        offset = (await client.get(session_path(session_id))).json()["offset"]
        assert offset in (0, 3)
        with anyio.fail_after(5):
            while (done := await send(client, session_id, b"abcdef"[offset:], offset=offset)).status_code == 409:
                await anyio.sleep(0.05)
        assert done.status_code == 200, done.text
        assert (await client.get("/v1/files/b/k:content")).content == b"abcdef"


# --- health ----------------------------------------------------------------------------------


async def test_healthz_is_200(client):
    response = await client.get("/healthz")
    assert response.status_code == 200


async def test_readyz_is_200_when_redis_answers_and_the_data_dir_is_writable(client, settings):
    assert (await client.get("/readyz")).status_code == 200
    assert [path.name for path in settings.data_dir.iterdir() if path.name.startswith(".readyz")] == []


async def test_readyz_is_503_when_the_data_dir_is_not_writable(client, settings):
    shutil.rmtree(settings.data_dir)
    settings.data_dir.write_bytes(b"not a directory any more")  # a volume gone; chmod does not stop root
    assert_error(await client.get("/readyz"), 503)
    assert (await client.get("/healthz")).status_code == 200


async def test_readyz_is_503_when_redis_does_not_answer(client, redis_server):
    redis_server.connected = False
    assert_error(await client.get("/readyz"), 503)
    redis_server.connected = True
    assert (await client.get("/readyz")).status_code == 200


# --- the OpenAPI document --------------------------------------------------------------------


def resolve(document: dict[str, Any], reference: str) -> Any:
    assert reference.startswith("#/"), reference
    node: Any = document
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


TYPES = {
    "string": lambda value: isinstance(value, str),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "null": lambda value: value is None,
}


def violations(schema: dict[str, Any], value: Any, document: dict[str, Any], where: str = "$") -> list[str]:
    """What in `value` breaks `schema`: a small JSON Schema checker (types, required, properties, items, *Of)."""
    if "$ref" in schema:
        return violations(resolve(document, schema["$ref"]), value, document, where)
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(TYPES[kind](value) for kind in kinds):
            return [f"{where}: {value!r} is not of type {kinds}"]
    problems = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and TYPES["number"](value) and value < schema["minimum"]:
        problems.append(f"{where}: {value!r} below {schema['minimum']}")
    if isinstance(value, dict):
        problems += [f"{where}: {name!r} is required" for name in schema.get("required", []) if name not in value]
        for name, part in schema.get("properties", {}).items():
            if name in value:
                problems += violations(part, value[name], document, f"{where}.{name}")
        if schema.get("additionalProperties") is False:
            problems += [
                f"{where}: {name!r} is not allowed" for name in value if name not in schema.get("properties", {})
            ]
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += violations(schema["items"], item, document, f"{where}[{index}]")
    for part in schema.get("allOf", []):
        problems += violations(part, value, document, where)
    if "anyOf" in schema and all(violations(part, value, document, where) for part in schema["anyOf"]):
        problems.append(f"{where}: {value!r} matches none of anyOf")
    if "oneOf" in schema:
        matching = sum(not violations(part, value, document, where) for part in schema["oneOf"])
        if matching != 1:
            problems.append(f"{where}: {value!r} matches {matching} of oneOf, not exactly one")
    return problems


def test_the_schema_checker_catches_what_it_should():
    document = {
        "components": {
            "schemas": {"A": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}}
        }
    }
    ref = {"$ref": "#/components/schemas/A"}
    assert violations(ref, {"a": 1}, document) == []
    assert violations(ref, {"a": True}, document) and violations(ref, {}, document) and violations(ref, [], document)
    assert violations({"oneOf": [ref, {"type": "object"}]}, {"a": 1}, document)
    assert violations({"anyOf": [ref, {"type": "object"}]}, {"a": 1}, document) == []
    assert violations({"type": "array", "items": ref}, [{"a": 1}, {"a": "x"}], document)


@pytest.fixture
async def document(client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


async def test_openapi_is_an_openapi_3_document(document):
    assert str(document["openapi"]).startswith("3.")
    assert document["info"]["title"] and document["info"]["version"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "head", "post", "delete", "put", "patch", "options"}:
                assert operation["responses"], (path, method)


async def test_openapi_covers_every_route_of_the_contract(document):
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert CONTRACT_ROUTES <= documented, CONTRACT_ROUTES - documented


async def test_openapi_refs_all_resolve(document):
    found = references(document)
    assert found
    for reference in found:
        assert isinstance(resolve(document, reference), dict), reference


async def test_openapi_documents_the_request_body_of_post_files(document):
    operation = document["paths"]["/v1/files"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    required = set((resolve(document, schema["$ref"]) if "$ref" in schema else schema)["required"])
    assert required == {"bucket", "key", "mime_type", "size"}
    assert violations(schema, {"bucket": "b", "key": "k", "mime_type": "text/plain", "size": 1}, document) == []
    assert violations(schema, {"bucket": "b", "key": "k", "mime_type": "text/plain", "size": "1"}, document)


async def exchanges(make_app) -> list[tuple[str, str, httpx.Response]]:
    """One real request (or more) for every route and every status the contract names: (template, method, response)."""
    done: list[tuple[str, str, httpx.Response]] = []
    files, session, item, content = (
        "/v1/files",
        "/v1/files/session:{session_id}",
        "/v1/files/{bucket}/{key}",
        "/v1/files/{bucket}/{key}:content",
    )
    async with http_client(make_app(max_upload_bytes=1000)) as client:

        async def call(template: str, method: str, path: str, **arguments: Any) -> httpx.Response:
            response = await client.request(method, path, **arguments)
            done.append((template, method.lower(), response))
            return response

        body = {"bucket": "b", "key": "k", "mime_type": "text/plain", "size": 6}
        created = await call(files, "POST", "/v1/files", json=body)
        session_id = created.json()["id"]
        url = session_path(session_id)
        await call(files, "POST", "/v1/files", json={**body, "size": 0, "key": "empty"})
        await call(files, "POST", "/v1/files", json={**body, "key": "a//b"})
        await call(files, "POST", "/v1/files", json={**body, "size": 1001})
        await call(session, "GET", url)
        await call(session, "POST", url, content=b"abc")
        await call(session, "POST", url, content=b"x", headers={"Upload-Offset": "0"})
        await call(session, "POST", url, content=b"defg")
        await call(session, "POST", url, content=b"x", headers={"Upload-Offset": "zz"})
        await call(session, "POST", url, content=b"def")
        await call(session, "POST", url, content=b"more")
        await call(session, "GET", session_path("0" * 32))
        await call(session, "POST", session_path("0" * 32), content=b"x")
        mismatch = await start(client, "b", "bad", 1, digest="blake3:" + b3(b"y"))
        await call(session, "POST", session_path(mismatch.json()["id"]), content=b"x")
        cancelled = await start_session(client, "b", "cancelled", 5)
        await call(session, "DELETE", session_path(cancelled))
        await call(session, "DELETE", session_path(cancelled))
        await call(files, "GET", "/v1/files")
        await call("/v1/files/{bucket}", "GET", "/v1/files/b")
        await call("/v1/files/{bucket}", "GET", "/v1/files/b?limit=1")
        await call("/v1/files/{bucket}", "GET", "/v1/files/b?limit=0")
        await call(item, "GET", "/v1/files/b/k")
        await call(item, "GET", "/v1/files/b/missing")
        await call(item, "GET", "/v1/files/b/a//b")
        await call(content, "GET", "/v1/files/b/k:content")
        await call(content, "HEAD", "/v1/files/b/k:content")
        await call(content, "GET", "/v1/files/b/k:content", headers={"Range": "bytes=1-2"})
        await call(content, "HEAD", "/v1/files/b/k:content", headers={"Range": "bytes=1-2"})
        await call(content, "GET", "/v1/files/b/k:content", headers={"Range": "bytes=100-"})
        await call(content, "GET", "/v1/files/b/k:content", headers={"If-None-Match": f'"{b3(b"abcdef")}"'})
        await call(content, "HEAD", "/v1/files/b/k:content", headers={"If-None-Match": f'"{b3(b"abcdef")}"'})
        await call(content, "GET", "/v1/files/b/missing:content")
        await call(content, "HEAD", "/v1/files/b/missing:content")
        await call(item, "DELETE", "/v1/files/b/k")
        await call(item, "DELETE", "/v1/files/b/k")
        await call("/healthz", "GET", "/healthz")
        await call("/readyz", "GET", "/readyz")
    return done


async def test_openapi_documents_every_status_and_body_the_routes_really_send(make_app, document):
    seen = set()
    for template, method, response in await exchanges(make_app):
        where = f"{method.upper()} {template} -> {response.status_code}"
        seen.add((template, method, response.status_code))
        responses = document["paths"][template][method]["responses"]
        documented = responses.get(str(response.status_code)) or responses.get("default")
        assert documented is not None, f"{where} is not documented"
        if response.status_code >= 400 and method != "head":
            assert_error(response, response.status_code)
        media = documented.get("content", {})
        if method != "head" and response.content and "application/json" in media:
            assert response.headers["content-type"].startswith("application/json"), where
            problems = violations(media["application/json"]["schema"], response.json(), document)
            assert problems == [], f"{where}: {problems}"
    statuses = {status for _, _, status in seen}
    assert {200, 204, 206, 304, 400, 404, 409, 413, 416, 422} <= statuses
