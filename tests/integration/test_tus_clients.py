"""tus clients no one here wrote, against real `files-service serve` processes on a real Redis:
tuspy (Python) and tus-js-client (run with Node.js). Every upload is checked byte for byte through
the seed's download route, with its bucket, key, mime type and metadata."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from tusclient.client import TusClient

from .harness import MiB, ServiceProcess, assert_content, expect, unavailable

NODE_DIR = Path(__file__).parent / "node"
NODE_SECONDS = 120


def tus_endpoint(process: ServiceProcess) -> str:
    return f"{process.base_url}/tus/"


def assert_file(process: ServiceProcess, bucket: str, key: str, content: bytes, mime_type: str, metadata: dict) -> None:
    info = expect(process.api.info(bucket, key), 200).json()
    assert (info["bytes"], info["mime_type"], info["metadata"]) == (len(content), mime_type, metadata)
    download = process.api.content(bucket, key)
    assert_content(download, content)
    assert download.headers["content-type"] == mime_type


# --- tuspy ----------------------------------------------------------------------------------------


def test_tuspy_uploads_a_whole_file(services):
    process = services.start()
    content = os.urandom(3 * MiB + 5)
    metadata = {"bucket": "py", "key": "whole/model.bin", "filetype": "application/x-model"}
    uploader = TusClient(tus_endpoint(process)).uploader(
        file_stream=io.BytesIO(content), chunk_size=len(content), metadata=metadata
    )
    uploader.upload()
    assert_file(process, "py", "whole/model.bin", content, "application/x-model", metadata)


def test_tuspy_uploads_in_checked_chunks_with_the_default_key(services):
    process = services.start()
    content = os.urandom(MiB + 123)
    uploader = TusClient(tus_endpoint(process)).uploader(
        file_stream=io.BytesIO(content),
        chunk_size=256 * 1024,
        metadata={"filename": "notes 1.txt"},
        upload_checksum=True,
    )
    uploader.upload()
    upload_id = uploader.url.rsplit("/", 1)[1]
    assert_file(
        process, "uploads", f"{upload_id}/notes_1.txt", content, "application/octet-stream", {"filename": "notes 1.txt"}
    )


def test_tuspy_resumes_after_the_service_was_killed(services):
    first = services.start(name="first")
    content = os.urandom(2 * MiB + 77)
    chunk = 512 * 1024
    metadata = {"bucket": "py", "key": "resumed.bin"}
    uploader = TusClient(tus_endpoint(first)).uploader(
        file_stream=io.BytesIO(content), chunk_size=chunk, metadata=metadata
    )
    uploader.upload(stop_at=2 * chunk)
    assert uploader.offset == 2 * chunk
    first.kill()

    second = services.start(name="second")
    upload_id = uploader.url.rsplit("/", 1)[1]
    resumed = TusClient(tus_endpoint(second)).uploader(
        file_stream=io.BytesIO(content), chunk_size=chunk, url=f"{tus_endpoint(second)}{upload_id}", retries=5
    )
    assert resumed.get_offset() == 2 * chunk
    resumed.upload()
    assert_file(second, "py", "resumed.bin", content, "application/octet-stream", metadata)


# --- tus-js-client ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_client() -> Path:
    """tests/integration/node with tus-js-client installed from its package-lock.json (`npm ci`)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("tus-js-client runs on Node.js, and node or npm is not on PATH")
    if not (NODE_DIR / "node_modules" / "tus-js-client").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
        )
        if installed.returncode != 0:
            unavailable(f"npm ci could not install tus-js-client: {installed.stderr[-2000:]}")
    return NODE_DIR / "upload.mjs"


def upload_with_node(script: Path, endpoint: str, path: Path, **options: object) -> dict[str, Any]:
    """Upload `path` with tus-js-client; returns the upload's `url` and the `requests` each origin
    received, by method (upload.mjs)."""
    done = subprocess.run(
        ["node", str(script), endpoint, str(path), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=NODE_SECONDS,
    )
    assert done.returncode == 0, f"tus-js-client failed: {done.stdout}{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


JS_CASES = {
    "whole": {},
    "chunks": {"chunkSize": 300 * 1024},
    "deferred-length": {"uploadLengthDeferred": True, "chunkSize": 400 * 1024},
}


@pytest.mark.parametrize("case", JS_CASES)
def test_tus_js_client_uploads(services, node_client, tmp_path, case):
    process = services.start()
    content = os.urandom(MiB + 4321)
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    metadata = {"bucket": "js", "key": f"{case}/file.bin", "filetype": "image/png", "filename": "file.bin", "note": "é"}
    options = {"protocol": "tus-v1", "metadata": metadata, **JS_CASES[case]}
    url = upload_with_node(node_client, tus_endpoint(process), path, **options)["url"]
    assert url.startswith(tus_endpoint(process))
    assert_file(process, "js", f"{case}/file.bin", content, "image/png", metadata)


def test_tus_js_client_overriding_the_patch_method(services, node_client, tmp_path):
    """`overridePatchMethod`: every chunk a POST with `X-HTTP-Method-Override: PATCH`, for networks that
    let no PATCH through."""
    process = services.start()
    content = os.urandom(MiB + 77)
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    metadata = {"bucket": "js", "key": "override/file.bin"}
    options = {"protocol": "tus-v1", "metadata": metadata, "chunkSize": 300 * 1024, "overridePatchMethod": True}
    result = upload_with_node(node_client, tus_endpoint(process), path, **options)
    assert list(result["requests"].values()) == [{"POST": 5}]  # the creation and four chunks
    assert_file(process, "js", "override/file.bin", content, "application/octet-stream", metadata)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
def test_tus_js_client_uploads_checked_chunks(services, node_client, tmp_path, algorithm):
    """Every chunk with its Upload-Checksum (given in tus-js-client's HTTP stack: upload.mjs)."""
    process = services.start()
    content = os.urandom(MiB + 999)
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    metadata = {"bucket": "js", "key": f"checked/{algorithm}.bin"}
    options = {"protocol": "tus-v1", "metadata": metadata, "chunkSize": 256 * 1024, "checksum": algorithm}
    result = upload_with_node(node_client, tus_endpoint(process), path, **options)
    assert result["checksummed"] == 5  # four full chunks and the rest, each checked
    assert_file(process, "js", f"checked/{algorithm}.bin", content, "application/octet-stream", metadata)


def test_tus_js_client_chunk_with_a_wrong_checksum_is_refused_and_not_kept(services, node_client, tmp_path):
    process = services.start()
    path = tmp_path / "upload.bin"
    path.write_bytes(os.urandom(300 * 1024))
    options = {
        "protocol": "tus-v1",
        "metadata": {"bucket": "js", "key": "checked/wrong.bin"},
        "chunkSize": 100 * 1024,
        "checksum": "sha256",
        "corruptChecksum": True,
        "retryDelays": [],
    }
    done = subprocess.run(
        ["node", str(node_client), tus_endpoint(process), str(path), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=NODE_SECONDS,
    )
    assert done.returncode == 1 and "response code: 460" in done.stderr, done.stderr
    expect(process.api.info("js", "checked/wrong.bin"), 404)
    upload_url = re.search(r"method: PATCH, url: (\S+),", done.stderr)
    assert upload_url is not None, done.stderr
    head = httpx.head(upload_url[1], headers={"Tus-Resumable": "1.0.0"})
    assert head.status_code == 200 and head.headers["upload-offset"] == "0"


def test_tus_js_client_parallel_uploads_spread_over_two_services(services, node_client, tmp_path):
    """parallelUploads: 4, each request sent to the next of two services on one Redis and data volume
    in turn, so that the parts, and the chunks of each part, are written by both."""
    processes = services.start_many(2)
    content = os.urandom(6 * MiB + 4321)
    path = tmp_path / "upload.bin"
    path.write_bytes(content)
    metadata = {"bucket": "js", "key": "parallel/file.bin", "filetype": "image/png", "filename": "file.bin"}
    options = {
        "protocol": "tus-v1",
        "metadata": metadata,
        "metadataForPartialUploads": {"filename": "part"},
        "parallelUploads": 4,
        "chunkSize": 512 * 1024,
        "spreadOver": [process.base_url for process in processes],
    }
    result = upload_with_node(node_client, tus_endpoint(processes[0]), path, **options)
    for process in processes:  # 4 partial uploads and a final one created, 4 parts of 3 chunks written
        received = result["requests"][process.base_url]
        assert received["POST"] >= 2 and received["PATCH"] >= 4, result["requests"]
    assert sum(counts["POST"] for counts in result["requests"].values()) == 5
    assert_file(processes[1], "js", "parallel/file.bin", content, "image/png", metadata)
    final = httpx.head(result["url"], headers={"Tus-Resumable": "1.0.0"})
    assert final.status_code == 200 and final.headers["upload-length"] == str(len(content))
    kind, _, parts = final.headers["upload-concat"].partition(";")
    assert kind == "final" and len(parts.split()) == 4
