"""The IETF draft "Resumable Uploads for HTTP" at /tus/ of real `files-service serve` processes on a real
Redis: tus-js-client speaking its protocols `ietf-draft-03` and `ietf-draft-05` (interop versions 5
and 6), and the latest draft (-11, interop version 8) in plain HTTP requests. Every upload is checked
byte for byte through the seed's download route, and listed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import MiB, ServiceProcess, expect, wait_for
from .test_tus_clients import assert_file, node_client, tus_endpoint, upload_with_node  # noqa: F401 - a fixture

PROTOCOLS = ["ietf-draft-03", "ietf-draft-05"]
CASES = {
    "whole": {},
    "chunks": {"chunkSize": 300 * 1024},
    "deferred-length": {"uploadLengthDeferred": True, "chunkSize": 400 * 1024},
}
LATEST = {"Upload-Draft-Interop-Version": "8"}
PARTIAL = "application/partial-upload"
SECONDS = 30


def assert_listed(process: ServiceProcess, bucket: str, key: str, size: int) -> None:
    listed = {file["key"]: file["bytes"] for file in process.api.files(bucket)}
    assert listed[key] == size


def write_content(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    content = os.urandom(size)
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    return path, content


# --- tus-js-client ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tus_js_client_uploads_with_the_draft(services, node_client, tmp_path, protocol, case):  # noqa: F811
    process = services.start()
    path, content = write_content(tmp_path, MiB + 4321)
    metadata = {"bucket": "ietf", "key": f"{protocol}/{case}.bin", "filetype": "image/png", "filename": "f.bin"}
    options = {"protocol": protocol, "metadata": metadata, **CASES[case]}
    url = upload_with_node(node_client, tus_endpoint(process), path, **options)["url"]
    assert url.startswith(tus_endpoint(process))
    assert_file(process, "ietf", f"{protocol}/{case}.bin", content, "image/png", metadata)
    assert_listed(process, "ietf", f"{protocol}/{case}.bin", len(content))
    session = expect(process.api.session(url.rsplit("/", 1)[1]), 200).json()
    assert (session["offset"], session["size"]) == (len(content), len(content))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tus_js_client_resumes_after_the_connection_was_cut(services, node_client, tmp_path, protocol):  # noqa: F811
    process = services.start()
    chunk = 512 * 1024
    path, content = write_content(tmp_path, 4 * chunk + 99)
    metadata = {"bucket": "ietf", "key": f"cut/{protocol}.bin"}
    options = {"protocol": protocol, "metadata": metadata, "chunkSize": chunk}
    url = upload_with_node(node_client, tus_endpoint(process), path, cutAfter=2 * chunk, **options)["url"]
    upload_id = url.rsplit("/", 1)[1]
    # What arrived of the request cut off is kept: the offset is where the cut left it, at least the 2 chunks.
    offset = expect(process.api.session(upload_id), 200).json()["offset"]
    assert 2 * chunk <= offset < len(content)
    resumed = upload_with_node(node_client, tus_endpoint(process), path, uploadUrl=url, **options)["url"]
    assert resumed == url
    assert_file(process, "ietf", f"cut/{protocol}.bin", content, "application/octet-stream", metadata)
    assert_listed(process, "ietf", f"cut/{protocol}.bin", len(content))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tus_js_client_resumes_after_the_service_was_killed(services, node_client, tmp_path, protocol):  # noqa: F811
    first = services.start(name="first")
    chunk = 256 * 1024
    path, content = write_content(tmp_path, 5 * chunk + 7)
    metadata = {"bucket": "ietf", "key": f"killed/{protocol}.bin"}
    options = {"protocol": protocol, "metadata": metadata, "chunkSize": chunk}
    url = upload_with_node(node_client, tus_endpoint(first), path, stopAfter=2 * chunk, **options)["url"]
    first.kill()

    second = services.start(name="second")
    moved = f"{tus_endpoint(second)}{url.rsplit('/', 1)[1]}"
    resumed = upload_with_node(node_client, tus_endpoint(second), path, uploadUrl=moved, **options)["url"]
    assert resumed == moved
    assert_file(second, "ietf", f"killed/{protocol}.bin", content, "application/octet-stream", metadata)
    assert_listed(second, "ietf", f"killed/{protocol}.bin", len(content))


# --- the latest draft (-11, interop version 8) in plain HTTP ----------------------------------------------


@pytest.fixture
def http(services) -> Iterator[tuple[ServiceProcess, httpx.Client]]:
    process = services.start()
    with httpx.Client(base_url=process.base_url, timeout=SECONDS) as client:
        yield process, client


def append(
    client: httpx.Client, url: str, offset: int, content: bytes | Iterator[bytes], complete: bool
) -> httpx.Response:
    headers = {**LATEST, "Upload-Offset": str(offset), "Upload-Complete": "?1" if complete else "?0"}
    return client.patch(url, content=content, headers={**headers, "Content-Type": PARTIAL})


def test_the_latest_draft_from_creation_to_completion(http):
    process, client = http
    content = os.urandom(3 * MiB + 5)
    options = client.options("/tus/", headers=LATEST)
    assert (options.status_code, options.headers["accept-patch"]) == (204, PARTIAL)
    assert options.headers["upload-limit"].startswith("max-size=")
    created = client.post(
        "/tus/", content=content[:MiB], headers={**LATEST, "Upload-Complete": "?0", "Upload-Length": str(len(content))}
    )
    assert created.status_code == 201, created.text
    assert (created.headers["upload-offset"], created.headers["upload-complete"]) == (str(MiB), "?0")
    assert "max-age=" in created.headers["upload-limit"]
    url = created.headers["location"]
    assert url.startswith(f"{process.base_url}/tus/")

    mismatch = append(client, url, 0, content[:10], complete=False)
    assert mismatch.status_code == 409
    assert mismatch.headers["content-type"] == "application/problem+json"
    expected = {
        "type": "https://iana.org/assignments/http-problem-types#mismatching-upload-offset",
        "expected-offset": MiB,
        "provided-offset": 0,
    }
    assert expected.items() <= mismatch.json().items()

    second = append(client, url, MiB, content[MiB : 2 * MiB], complete=False)
    assert (second.status_code, second.headers["upload-offset"], second.headers["upload-complete"]) == (
        204,
        str(2 * MiB),
        "?0",
    )
    offset = client.head(url, headers=LATEST)
    assert (offset.status_code, offset.headers["upload-offset"], offset.headers["upload-complete"]) == (
        204,
        str(2 * MiB),
        "?0",
    )
    assert (offset.headers["upload-length"], offset.headers["cache-control"]) == (str(len(content)), "no-store")
    last = append(client, url, 2 * MiB, content[2 * MiB :], complete=True)
    assert (last.status_code, last.headers["upload-complete"]) == (204, "?1")
    assert client.head(url, headers=LATEST).headers["upload-complete"] == "?1"
    more = append(client, url, len(content), b"more", complete=True)  # bytes for a complete upload (4.4.2)
    assert (more.status_code, more.json()["type"]) == (
        400,
        "https://iana.org/assignments/http-problem-types#inconsistent-upload-length",
    )
    empty = append(client, url, 3, b"", complete=False)
    assert (empty.status_code, empty.json()["type"]) == (
        400,
        "https://iana.org/assignments/http-problem-types#completed-upload",
    )

    upload_id = url.rsplit("/", 1)[1]
    assert_file(process, "uploads", upload_id, content, "application/octet-stream", {})
    assert_listed(process, "uploads", upload_id, len(content))


def test_the_latest_draft_resumes_after_the_connection_was_cut(http):
    process, client = http
    content = os.urandom(2 * MiB + 3)
    created = client.post("/tus/", headers={**LATEST, "Upload-Complete": "?0"})
    url = created.headers["location"]

    def cut_off() -> Iterator[bytes]:
        yield content[:MiB]
        raise ConnectionAbortedError("the test cuts the connection")

    with pytest.raises(ConnectionAbortedError):
        append(client, url, 0, cut_off(), complete=True)

    def resumable_at() -> int | None:
        offset = int(client.head(url, headers=LATEST).headers["upload-offset"])
        return offset if offset == MiB else None

    offset = wait_for(resumable_at, SECONDS, "the cut request's bytes to be kept")
    # The length is learned from the request that completes the upload: unknown until then.
    assert "upload-length" not in client.head(url, headers=LATEST).headers
    done = append(client, url, offset, content[offset:], complete=True)
    assert (done.status_code, done.headers["upload-offset"]) == (204, str(len(content)))
    assert_file(process, "uploads", url.rsplit("/", 1)[1], content, "application/octet-stream", {})


def test_the_latest_draft_limits_and_cancellation(services):
    process = services.start(FILES_MAX_UPLOAD_BYTES=str(MiB))
    with httpx.Client(base_url=process.base_url, timeout=SECONDS) as client:
        too_large = client.post("/tus/", headers={**LATEST, "Upload-Complete": "?0", "Upload-Length": str(MiB + 1)})
        assert too_large.status_code == 413
        assert too_large.headers["upload-limit"].startswith(f"max-size={MiB},")
        assert too_large.headers["content-type"] == "application/problem+json"
        metadata = "bucket aWV0Zg==,key Y2FuY2VsbGVkLmJpbg=="  # ietf, cancelled.bin
        created = client.post(
            "/tus/", content=b"abc", headers={**LATEST, "Upload-Complete": "?0", "Upload-Metadata": metadata}
        )
        url = created.headers["location"]
        assert client.delete(url, headers=LATEST).status_code == 204
        assert client.head(url, headers=LATEST).status_code == 404
        assert append(client, url, 3, b"d", complete=True).status_code == 404
        assert "ietf" not in process.api.buckets()
        assert process.api.session(url.rsplit("/", 1)[1]).json()["code"] == "session_not_found"
