"""OpenAI's Uploads API on the ASGI app: parts completed in the order named, the MD5 checked (a mismatch
consumes nothing), every refusal in OpenAI's shape with nothing stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import httpx
import pytest
from apihelpers import entry_files, partial_files
from conftest import http_client
from test_openai_files import API, assert_openai_error

from service.core.auth import new_token

pytestmark = pytest.mark.anyio


async def new_upload(client: httpx.AsyncClient, size: int, **extra: object) -> dict:
    body = {"bytes": size, "filename": "data.jsonl", "mime_type": "application/jsonl", "purpose": "fine-tune"}
    response = await client.post(f"{API}/uploads", json={**body, **extra})
    assert response.status_code == 200, response.text
    return response.json()


async def add_part(client: httpx.AsyncClient, upload_id: str, data: bytes) -> httpx.Response:
    return await client.post(f"{API}/uploads/{upload_id}/parts", files={"data": ("blob", data)})


async def complete(client: httpx.AsyncClient, upload_id: str, part_ids: list[str], **extra: object) -> httpx.Response:
    return await client.post(f"{API}/uploads/{upload_id}/complete", json={"part_ids": part_ids, **extra})


async def parts_of(client: httpx.AsyncClient, upload_id: str, *contents: bytes) -> list[str]:
    ids = []
    for content in contents:
        response = await add_part(client, upload_id, content)
        assert response.status_code == 200, response.text
        part = response.json()
        assert (part["object"], part["upload_id"]) == ("upload.part", upload_id) and part["id"].startswith("part_")
        ids.append(part["id"])
    return ids


def pause_assembly(services, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Completions stop where they start assembling the parts: (one has got there, let it go on)."""
    reached, go_on = asyncio.Event(), asyncio.Event()
    assemble = services.core._assemble

    async def paused(*arguments: object, **keywords: object) -> object:
        reached.set()
        await go_on.wait()
        return await assemble(*arguments, **keywords)

    monkeypatch.setattr(services.core, "_assemble", paused)
    return reached, go_on


async def test_parts_complete_in_the_order_named_with_the_md5_checked(client):
    upload = await new_upload(client, 11)
    assert upload["id"].startswith("upload_") and upload["object"] == "upload"
    assert (upload["status"], upload["file"], upload["bytes"]) == ("pending", None, 11)
    assert upload["expires_at"] == upload["created_at"] + 3600
    world, hello = await parts_of(client, upload["id"], b"world", b"hello ")
    wrong = assert_openai_error(await complete(client, upload["id"], [hello, world], md5="0" * 32), 400)
    assert wrong["code"] == "digest_mismatch"
    md5 = hashlib.md5(b"hello world").hexdigest()
    response = await complete(client, upload["id"], [hello, world], md5=md5)
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["status"] == "completed" and done["id"] == upload["id"]
    file = done["file"]
    assert (file["bytes"], file["filename"], file["purpose"], file["object"]) == (11, "data.jsonl", "fine-tune", "file")
    assert (await client.get(f"{API}/files/{file['id']}/content")).content == b"hello world"
    info = (await client.get(f"/v1/files/openai/{file['id']}")).json()
    assert info["mime_type"] == "application/jsonl"
    closed = assert_openai_error(await add_part(client, upload["id"], b"more"), 400)
    assert closed["code"] == "upload_closed"
    assert_openai_error(await complete(client, upload["id"], [hello, world]), 400)


async def test_refused_completions_consume_nothing(client, settings):
    upload = await new_upload(client, 6)
    first, second = await parts_of(client, upload["id"], b"abc", b"def")
    assert_openai_error(await complete(client, upload["id"], [first]), 400)  # 3 bytes, not 6
    assert_openai_error(await complete(client, upload["id"], [first, first]), 400)
    assert_openai_error(await complete(client, upload["id"], [first, "part_" + "0" * 32]), 400, "part_ids")
    assert_openai_error(await complete(client, upload["id"], []), 400, "part_ids")
    assert entry_files(settings.data_dir) == []
    assert (await complete(client, upload["id"], [second, first])).json()["file"]["bytes"] == 6


async def test_a_cancelled_upload_takes_no_parts(client, settings):
    upload = await new_upload(client, 3)
    await parts_of(client, upload["id"], b"abc")
    cancelled = await client.post(f"{API}/uploads/{upload['id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    assert_openai_error(await add_part(client, upload["id"], b"abc"), 400)
    assert_openai_error(await client.post(f"{API}/uploads/{upload['id']}/cancel"), 400)
    assert [path for path in (settings.data_dir / "partial").iterdir() if path.is_file()] == []


async def test_a_part_over_the_limit_is_413_and_not_kept(app, client, settings):
    app.state.services.parted.max_part_bytes = 10
    upload = await new_upload(client, 11)
    assert_openai_error(await add_part(client, upload["id"], b"x" * 11), 413)
    assert [path for path in (settings.data_dir / "partial").iterdir() if path.is_file()] == []
    await parts_of(client, upload["id"], b"x" * 10)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"purpose": "nonsense"}, "purpose"),
        ({"bytes": -1}, "bytes"),
        ({"mime_type": "not a type"}, None),
    ],
)
async def test_bad_new_uploads_are_400(client, body, param):
    base = {"bytes": 1, "filename": "f", "mime_type": "text/plain", "purpose": "batch"}
    assert_openai_error(await client.post(f"{API}/uploads", json={**base, **body}), 400, param)


async def test_an_upload_over_the_limit_is_413(make_app):
    async with http_client(make_app(max_upload_bytes=10)) as client:
        body = {"bytes": 11, "filename": "f", "mime_type": "text/plain", "purpose": "batch"}
        assert_openai_error(await client.post(f"{API}/uploads", json=body), 413)


async def test_unknown_uploads_and_parts_without_data(client):
    assert_openai_error(await add_part(client, "upload_" + "0" * 32, b"x"), 404)
    assert_openai_error(await complete(client, "upload_nothing", ["part_x"]), 404)
    upload = await new_upload(client, 1)
    response = await client.post(f"{API}/uploads/{upload['id']}/parts", files={"other": ("x", b"x")})
    assert_openai_error(response, 400, "data")


async def test_an_upload_belongs_to_its_token(make_app, tmp_path):
    one, one_entry = new_token("one", {"openai": ["read", "write"]})
    two, two_entry = new_token("two", {"openai": ["read", "write"]})
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [one_entry, two_entry]}))
    async with http_client(make_app(auth_tokens_file=tokens)) as client:
        client.headers["Authorization"] = f"Bearer {one}"
        upload = await new_upload(client, 1)
        client.headers["Authorization"] = f"Bearer {two}"
        assert_openai_error(await add_part(client, upload["id"], b"x"), 404)
        assert_openai_error(await client.post(f"{API}/uploads/{upload['id']}/cancel"), 404)


async def test_an_expired_upload_refuses_parts(make_app):
    async with http_client(make_app(openai_upload_ttl_seconds=1)) as client:
        upload = await new_upload(client, 6)
        assert upload["expires_at"] == upload["created_at"] + 1
        deadline = time.monotonic() + 30
        while (response := await add_part(client, upload["id"], b"abc")).status_code == 200:
            assert time.monotonic() < deadline, "the upload never expired"
            await asyncio.sleep(0.05)
        assert "expired" in assert_openai_error(response, 400)["message"]
        assert "expired" in assert_openai_error(await complete(client, upload["id"], ["part_x"]), 400)["message"]


async def test_the_sweep_drops_an_expired_upload_with_its_parts(app, client, settings):
    upload = await new_upload(client, 6)
    await parts_of(client, upload["id"], b"abc", b"def")
    assert len(partial_files(settings.data_dir)) == 2
    assert await app.state.services.parted.sweep(time.time()) == 0  # not expired yet
    assert await app.state.services.parted.sweep(upload["expires_at"]) == 1
    assert partial_files(settings.data_dir) == []
    assert_openai_error(await add_part(client, upload["id"], b"ghi"), 404)


async def test_a_completion_under_way_when_the_upload_expires_is_not_swept_from_under_it(app, client, monkeypatch):
    """The sweep finds the parts held by the completion: it keeps the upload for a later sweep, so
    the completion ends as completed (not a 404 with its file stored), and the next sweep drops it."""
    services = app.state.services
    upload = await new_upload(client, 6)
    parts = await parts_of(client, upload["id"], b"abc", b"def")
    assembling, swept = pause_assembly(services, monkeypatch)
    completing = asyncio.create_task(complete(client, upload["id"], parts))
    await assembling.wait()
    assert await services.parted.sweep(upload["expires_at"]) == 0
    swept.set()
    response = await completing
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["status"] == "completed"
    assert (await client.get(f"{API}/files/{done['file']['id']}/content")).content == b"abcdef"
    assert await services.parted.sweep(upload["expires_at"]) == 1


async def test_a_cancellation_while_a_completion_holds_the_parts_is_refused(app, client, monkeypatch):
    """Cancelled under a completion, the upload said 'cancelled' while its file was stored and the
    completion answered 400: the cancellation is refused instead (409), the completion ends well."""
    services = app.state.services
    upload = await new_upload(client, 6)
    parts = await parts_of(client, upload["id"], b"abc", b"def")
    assembling, cancelled = pause_assembly(services, monkeypatch)
    completing = asyncio.create_task(complete(client, upload["id"], parts))
    await assembling.wait()
    assert_openai_error(await client.post(f"{API}/uploads/{upload['id']}/cancel"), 409)
    cancelled.set()
    response = await completing
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"


async def test_an_empty_upload_completes_only_from_empty_parts(client, settings):
    """An upload of 0 bytes is an empty file at once: its parts must add nothing and the MD5 be the
    empty content's; completed, it leaves no part behind."""
    upload = await new_upload(client, 0)
    full, empty = await parts_of(client, upload["id"], b"abc", b"")
    assert_openai_error(await complete(client, upload["id"], [full]), 400, "part_ids")
    wrong = assert_openai_error(await complete(client, upload["id"], [empty], md5="0" * 32), 400)
    assert wrong["code"] == "digest_mismatch"
    response = await complete(client, upload["id"], [empty], md5=hashlib.md5(b"").hexdigest())
    assert response.status_code == 200, response.text
    assert response.json()["file"]["bytes"] == 0
    assert partial_files(settings.data_dir) == []
