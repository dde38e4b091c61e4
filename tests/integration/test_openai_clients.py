"""OpenAI's Files API through the clients platforms use, against real `files-service serve` processes on
a real Redis: the `openai` SDK (`OpenAI(base_url=<service>/v1/openai/v1)`) and `llama-stack-client`
(`LlamaStackClient(base_url=<service>)`), each unmodified. Every file is checked through the seed's API too."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from llama_stack_client import LlamaStackClient
from openai import OpenAI

from service.core.auth import new_token

from .harness import MiB, ServiceProcess, b3, expect, peak_rss, wait_for

JSONL = b'{"a": 1}\n'
EXPIRY_SECONDS = 60  # the sweeper runs every half second here (FILES_SWEEP_INTERVAL_SECONDS)


@pytest.fixture
def sdk() -> Iterator[Callable[..., OpenAI]]:
    """`sdk(process, api_key=...)`: an `openai` client of the service; every one is closed at the end."""
    made: list[OpenAI] = []

    def make(process: ServiceProcess, api_key: str = "unused") -> OpenAI:
        made.append(OpenAI(base_url=f"{process.base_url}/v1/openai/v1", api_key=api_key, max_retries=0))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_files_through_the_openai_sdk(services, sdk):
    process = services.start()
    client = sdk(process)
    created = client.files.create(file=("notes.jsonl", JSONL), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        9,
        "notes.jsonl",
        "batch",
        "processed",
    )
    assert created.expires_at is None
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == JSONL
    info = expect(process.api.info("openai", created.id), 200).json()
    assert info["metadata"] == {"filename": "notes.jsonl", "purpose": "batch"}
    assert info["digest"] == f"blake3:{b3(JSONL)}"
    seed = process.api.upload("elsewhere", "same.jsonl", JSONL)
    assert seed["digest"] == info["digest"]  # content uploaded both ways is stored once
    assert len([path for path in (process.data_dir / "blobs").rglob("*") if path.is_file()]) == 1
    assert [file.id for file in client.files.list()] == [created.id]
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    expect(process.api.info("openai", created.id), 404)


def test_errors_are_the_sdk_s_exception_classes(services, sdk, tmp_path):
    reader, reader_entry = new_token("reader", {"openai": ["read"]})
    writer, writer_entry = new_token("writer", {"openai": ["read", "write", "delete"]})
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [reader_entry, writer_entry]}))
    process = services.start(FILES_AUTH_TOKENS_FILE=str(tokens))
    with pytest.raises(openai.AuthenticationError):
        sdk(process, "not a token").files.list()
    with pytest.raises(openai.PermissionDeniedError):
        sdk(process, reader).files.create(file=("a.txt", b"a"), purpose="assistants")
    with pytest.raises(openai.NotFoundError):
        sdk(process, reader).files.retrieve("file-000000000000nothing")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(process, writer).files.create(file=("a.txt", b"a"), purpose="no-such-purpose")  # type: ignore[arg-type]
    assert refused.value.param == "purpose" and refused.value.code == "invalid_request"
    assert sdk(process, reader).files.list().data == []


def test_a_200_mib_file_streams_through_a_worker_of_small_memory(services, sdk, tmp_path):
    process = services.start()
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(200):
            block = os.urandom(MiB)
            digest.update(block)
            out.write(block)
    client = sdk(process)
    with path.open("rb") as file:
        created = client.files.create(file=file, purpose="fine-tune")
    assert (created.bytes, created.filename) == (200 * MiB, "big.bin")
    assert peak_rss(process.pid) < 150 * MiB, "the service held the body in memory"
    downloaded = hashlib.sha256()
    with client.files.with_streaming_response.content(created.id) as response:
        for chunk in response.iter_bytes(MiB):
            downloaded.update(chunk)
    assert downloaded.hexdigest() == digest.hexdigest()


def test_listing_2500_files_with_the_sdk_s_auto_pagination(services, sdk):
    process = services.start()
    client = sdk(process)

    def create(number: int) -> tuple[str, str]:
        purpose = "vision" if number % 5 == 0 else "user_data"
        return client.files.create(file=(f"{number}.txt", f"{number}".encode()), purpose=purpose).id, purpose

    with ThreadPoolExecutor(4) as pool:
        created = list(pool.map(create, range(2500)))
    ids = sorted(file_id for file_id, _ in created)  # ids sort as their creation times
    assert [file.id for file in client.files.list(limit=1000, order="asc")] == ids
    newest_first = list(client.files.list(limit=300))  # OpenAI's default order: desc
    assert [file.id for file in newest_first] == ids[::-1]
    assert [file.created_at for file in newest_first] == sorted((f.created_at for f in newest_first), reverse=True)
    vision = sorted(file_id for file_id, purpose in created if purpose == "vision")
    assert [file.id for file in client.files.list(purpose="vision", limit=64, order="asc")] == vision
    assert len(vision) == 500


def test_an_expired_file_is_gone_within_the_sweep(services, sdk):
    process = services.start()
    client = sdk(process)
    expiring = client.files.create(
        file=("short.txt", b"short-lived"),
        purpose="assistants",
        expires_after={"anchor": "created_at", "seconds": 1},
    )
    staying = client.files.create(file=("long.txt", b"long-lived"), purpose="assistants")
    assert expiring.expires_at == expiring.created_at + 1

    def gone() -> bool:
        try:
            client.files.retrieve(expiring.id)
        except openai.NotFoundError:
            return True
        return False

    wait_for(gone, EXPIRY_SECONDS, "the expired file to be deleted")
    # Its entry goes from the volume first, from the index (the listing) a round trip later.
    wait_for(lambda: [file.id for file in client.files.list()] == [staying.id], 10, "the listing to drop it")
    assert not [path for path in (process.data_dir / "blobs").rglob(b3(b"short-lived"))]


def test_files_through_llama_stack_client(services):
    process = services.start()
    with LlamaStackClient(base_url=process.base_url, max_retries=0) as client:
        check_llama_stack_client(process, client)


def check_llama_stack_client(process: ServiceProcess, client: LlamaStackClient) -> None:
    created = client.files.create(file=("doc.md", b"# a document\n"), purpose="assistants")
    assert (created.bytes, created.filename, created.purpose) == (13, "doc.md", "assistants")
    assert client.files.retrieve(created.id).id == created.id
    assert [file.id for file in client.files.list().data] == [created.id]
    assert client.files.content(created.id) == "# a document\n"
    assert expect(process.api.content("openai", created.id), 200).content == b"# a document\n"
    client.files.delete(created.id)
    expect(process.api.info("openai", created.id), 404)


def test_upload_file_chunked_sends_several_parts(services, sdk, tmp_path):
    process = services.start()
    content = os.urandom(5 * MiB + 123)
    path = tmp_path / "chunked.bin"
    path.write_bytes(content)
    upload = sdk(process).uploads.upload_file_chunked(
        file=path, mime_type="application/octet-stream", purpose="assistants", part_size=2 * MiB
    )
    assert upload.status == "completed" and upload.file is not None
    assert (upload.file.bytes, upload.file.filename) == (len(content), "chunked.bin")
    assert sdk(process).files.content(upload.file.id).read() == content


def test_parts_in_parallel_on_two_services_completed_in_another_order(services, sdk):
    first, second = services.start_many(2)
    clients = [sdk(first), sdk(second)]
    pieces = [os.urandom(MiB + number) for number in range(6)]
    content = b"".join(pieces)
    upload = clients[0].uploads.create(
        bytes=len(content), filename="parallel.bin", mime_type="application/octet-stream", purpose="batch"
    )
    assert upload.status == "pending"

    def send(number: int) -> tuple[int, str]:
        client = clients[number % 2]  # every other part to the other service
        return number, client.uploads.parts.create(upload.id, data=pieces[number]).id

    with ThreadPoolExecutor(6) as pool:
        sent = list(pool.map(send, [5, 2, 0, 4, 1, 3]))  # they arrive in any order
    part_ids = [part_id for _, part_id in sorted(sent)]
    assert part_ids != [part_id for _, part_id in sent]
    with pytest.raises(openai.BadRequestError):
        clients[1].uploads.complete(upload.id, part_ids=part_ids, md5=hashlib.md5(b"other").hexdigest())
    done = clients[1].uploads.complete(upload.id, part_ids=part_ids, md5=hashlib.md5(content).hexdigest())
    assert done.status == "completed" and done.file is not None and done.file.bytes == len(content)
    assert clients[0].files.content(done.file.id).read() == content
    info = expect(first.api.info("openai", done.file.id), 200).json()
    assert info["digest"] == f"blake3:{b3(content)}" and info["metadata"]["filename"] == "parallel.bin"


def test_a_cancelled_upload_refuses_parts(services, sdk):
    process = services.start()
    client = sdk(process)
    upload = client.uploads.create(bytes=3, filename="c.txt", mime_type="text/plain", purpose="user_data")
    part = client.uploads.parts.create(upload.id, data=b"abc")
    assert client.uploads.cancel(upload.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.uploads.parts.create(upload.id, data=b"abc")
    with pytest.raises(openai.BadRequestError):
        client.uploads.complete(upload.id, part_ids=[part.id])
    with pytest.raises(openai.NotFoundError):
        client.uploads.cancel("upload_" + "0" * 32)
