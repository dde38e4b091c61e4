"""Operations: the compose topology as processes, SIGTERM mid-upload, metrics across workers, logs.

No container engine runs here, so what compose.yaml describes (one Redis, three workers on one
data volume, a round-robin proxy in front) runs as plain processes on loopback, with a small
proxy written below in place of nginx.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import (
    FilesClient,
    MiB,
    ServiceProcess,
    assert_content,
    b3,
    expect,
    files_under,
    free_port,
    pieces,
    service_command,
    wait_for,
)

SESSION_ROUTE = "/v1/files/session:{session_id}"
CREATE_ROUTE = "/v1/files"
CONTENT_ROUTE = "/v1/files/{bucket}/{key:path}:content"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


# --- a small round-robin reverse proxy, in place of the compose file's nginx ---------------------

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
PIECE = 64 * 1024


class RoundRobinProxy:
    """HTTP/1.1 on loopback: each request goes to the next upstream in turn, bodies streamed both ways.

    Like the nginx of compose.yaml: no body buffering, the Host header passed through, no
    stickiness (a keep-alive connection's requests are spread too). Request bodies need a
    Content-Length (the tests send one).
    """

    def __init__(self, upstreams: list[ServiceProcess]) -> None:
        self.upstreams = [("127.0.0.1", upstream.port) for upstream in upstreams]
        self._turns = itertools.cycle(range(len(upstreams)))
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def forward(self) -> None:
                proxy.forward(self)

            do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = do_OPTIONS = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="round-robin-proxy", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)

    def next_upstream(self) -> tuple[str, int]:
        with self._lock:
            return self.upstreams[next(self._turns)]

    def forward(self, downstream: BaseHTTPRequestHandler) -> None:
        if "chunked" in downstream.headers.get("Transfer-Encoding", ""):
            downstream.send_error(411, "this test proxy needs a Content-Length")
            return
        upstream = http.client.HTTPConnection(*self.next_upstream(), timeout=60)
        try:
            upstream.putrequest(downstream.command, downstream.path, skip_host=True, skip_accept_encoding=True)
            for name, value in downstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.endheaders()
            remaining = int(downstream.headers.get("Content-Length") or 0)
            while remaining:
                data = downstream.rfile.read(min(remaining, PIECE))
                if not data:
                    downstream.close_connection = True
                    return  # the client went away: so does the upstream connection, mid-body
                upstream.send(data)
                remaining -= len(data)
            response = upstream.getresponse()
            downstream.send_response_only(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    downstream.send_header(name, value)
            if response.getheader("Content-Length") is None and downstream.command != "HEAD":
                downstream.send_header("Connection", "close")  # a body of unknown length ends with the connection
                downstream.close_connection = True
            downstream.end_headers()
            while data := response.read(PIECE):
                downstream.wfile.write(data)
        finally:
            upstream.close()


# --- reading logs and metrics --------------------------------------------------------------------


def log_lines(process: ServiceProcess) -> list[str]:
    """The process's output lines, without the header line the harness writes."""
    return [line for line in process.log_text().splitlines() if line and not line.startswith("--- ")]


def json_records(process: ServiceProcess) -> list[dict]:
    """Every output line as a JSON object: FILES_LOG_FORMAT=json allows nothing else."""
    records = []
    for line in log_lines(process):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"{process.name} wrote a line that is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def requests_logged(process: ServiceProcess) -> dict[str, dict]:
    """The access-log records of a process, by request id."""
    return {record["request_id"]: record for record in json_records(process) if record.get("event") == "request"}


Samples = dict[tuple[str, frozenset], float]


def scrape(client: FilesClient) -> Samples:
    response = expect(client.http.get("/metrics"), 200)
    assert response.headers["content-type"].startswith("text/plain; version="), response.headers["content-type"]
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def stable(samples: Samples) -> Samples:
    """What must read the same from every worker once the traffic is over: all but the
    scrapes themselves (each one counts) and the sweeps (they go on)."""
    return {
        (name, labels): number
        for (name, labels), number in samples.items()
        if dict(labels).get("route") != "/metrics" and name != "files_sweeper_runs_total"
    }


def metric_writers(process: ServiceProcess, kind: str) -> set[int]:
    """The worker pids that wrote samples of `kind` (counter, histogram) to the shared multiprocess directory."""
    directories = set()
    for pid in process.worker_pids():
        with open(f"/proc/{pid}/environ", "rb") as environ:
            for variable in environ.read().split(b"\0"):
                if variable.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                    directories.add(Path(variable.split(b"=", 1)[1].decode()))
    assert len(directories) == 1, f"the workers do not share one metrics directory: {directories}"
    return {int(path.stem.rsplit("_", 1)[1]) for path in directories.pop().glob(f"{kind}_*.db")}


# --- (a) the compose topology: three workers behind a round-robin proxy ----------------------------


def test_uploads_through_a_round_robin_proxy_spread_chunks_over_three_workers(services) -> None:
    workers = services.start_many(3, name="files")
    uploads = {
        f"run-{number}/part.bin": os.urandom(size)
        for number, size in enumerate([700_001, 1_300_007, 450_003, 2 * MiB + 9])
    }
    chunk_size = 256 * 1024 + 1

    sent: dict[str, tuple[str, int]] = {}  # request id -> (key, bytes in the body)
    with RoundRobinProxy(workers) as proxy, FilesClient(proxy.url) as client:
        for key, content in uploads.items():
            created = client.create("compose", key, len(content))
            # The service builds its URLs from the Host header the proxy passes on.
            assert created["url"] == f"{proxy.url}/v1/files/session:{created['id']}"
            offset, result = 0, created
            for number, piece in enumerate(pieces(content, chunk_size)):
                request_id = f"{key}#{number}"
                response = client.send(created["id"], piece, offset, headers={"X-Request-ID": request_id})
                result = expect(response, 200).json()
                assert response.headers["x-request-id"] == request_id
                sent[request_id] = (key, len(piece))
                offset += len(piece)
            assert result["bytes"] == len(content) and result["digest"] == f"blake3:{b3(content)}"
            assert result["url"].startswith(proxy.url)
            assert_content(client.content("compose", key), content)
        assert sorted(client.keys("compose")) == sorted(uploads)

    # Which worker took each chunk, from the workers' own access logs.
    def where() -> dict[str, str] | None:
        seen = {rid: worker.name for worker in workers for rid in requests_logged(worker) if rid in sent}
        return seen if len(seen) == len(sent) else None

    taken_by = wait_for(where, 10, "every chunk in some worker's access log")
    for worker in workers:
        for request_id, record in requests_logged(worker).items():
            if request_id in sent:
                assert (record["method"], record["route"], record["status"]) == ("POST", SESSION_ROUTE, 200)
                assert record["bytes_in"] == sent[request_id][1]
    for key in uploads:
        holders = {taken_by[rid] for rid, (chunk_key, _) in sent.items() if chunk_key == key}
        assert len(holders) >= 2, f"every chunk of {key} landed on {holders}: the proxy did not spread them"
    assert set(taken_by.values()) == {worker.name for worker in workers}

    # Every worker serves every file, exactly.
    for worker in workers:
        for key, content in uploads.items():
            assert_content(worker.api.content("compose", key), content)


# --- (b) SIGTERM mid-upload ---------------------------------------------------------------------


class PausedBody:
    """A request body sent from a thread: `head` at once, then (once released) `tail`, with a Content-Length."""

    def __init__(self, process: ServiceProcess, session_id: str, content: bytes, head: int) -> None:
        self.content = content
        self.head = head
        self.release = threading.Event()
        self.outcome: httpx.Response | Exception | None = None
        self._client = process.client()
        self._thread = threading.Thread(target=self._send, args=(session_id,), daemon=True)
        self._thread.start()

    def _body(self) -> Iterator[bytes]:
        yield from pieces(self.content[: self.head], PIECE)
        if not self.release.wait(timeout=60):
            raise RuntimeError("the test never released the body")
        yield from pieces(self.content[self.head :], PIECE)

    def _send(self, session_id: str) -> None:
        try:
            headers = {"Content-Length": str(len(self.content))}
            self.outcome = self._client.send(session_id, self._body(), offset=0, headers=headers)
        except Exception as error:  # noqa: BLE001 - the connection cut by the service's exit
            self.outcome = error

    def finish(self, timeout: float = 30) -> httpx.Response | Exception:
        self.release.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request did not end"
        assert self.outcome is not None
        return self.outcome


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_mid_upload_finishes_short_requests_and_keeps_cut_ones_resumable(services, data_dir) -> None:
    grace = 2.0
    # A lease longer than the pause: a body that sends nothing for longer than a lease loses its
    # session to whoever comes next (docs/design.md), and keeps nothing of what it sent since its
    # last checkpoint. Here the pause is the shutdown's doing, and everything that arrived is kept.
    env = {"FILES_SHUTDOWN_GRACE_SECONDS": str(grace), "FILES_LOCK_LEASE_SECONDS": "10"}
    service = services.start(name="stopping", **env)
    big, small = os.urandom(8 * MiB + 3), os.urandom(MiB + 300_001)
    big_id = service.api.create("term", "big.bin", len(big))["id"]
    small_id = service.api.create("term", "small.bin", len(small))["id"]

    cut = PausedBody(service, big_id, big, head=3 * MiB + 5)
    finishing = PausedBody(service, small_id, small, head=MiB + 7)
    try:
        # Both bodies have begun to arrive: the service has written part of each to its staging file.
        for session_id in (big_id, small_id):
            partial = data_dir / "partial" / session_id
            wait_for(lambda path=partial: path.exists() and path.stat().st_size >= MiB, 15, f"part of {session_id}")

        os.kill(service.pid, signal.SIGTERM)
        signalled = time.monotonic()
        # New connections are refused at once, while the requests in flight go on.
        wait_for(lambda: refuses_connections(service.port), grace, "the service to stop accepting connections")
        assert service.running(), "the service must wait for the requests in flight, up to the grace period"

        # The short one is released now and completes within the grace period.
        completed = finishing.finish()
        assert isinstance(completed, httpx.Response), completed
        assert expect(completed, 200).json()["digest"] == f"blake3:{b3(small)}"

        # The long one never finishes: the service exits once the grace period is over.
        status = service.wait_exit(timeout=grace + 10)
        stopped_after = time.monotonic() - signalled
    finally:
        outcome = cut.finish()
        finishing.finish()
    assert grace - 0.5 <= stopped_after <= grace + 5, f"stopped {stopped_after:.1f} s after SIGTERM (grace {grace} s)"
    assert status == 0, f"exit status {status} after a graceful stop"
    assert not (isinstance(outcome, httpx.Response) and outcome.is_success), "a cut-off chunk must not get a 2xx"

    # A fresh process: the session's offset is exactly what is held on disk, and the upload resumes there.
    held = (data_dir / "partial" / big_id).stat().st_size
    fresh = services.start(name="fresh", **env)
    offset = fresh.api.offset(big_id)
    assert offset == held, f"the session says {offset} bytes, the service holds {held}"
    assert MiB <= offset <= cut.head, (
        f"offset {offset}: the bytes that arrived before SIGTERM ({cut.head} sent) are kept"
    )
    done = expect(fresh.api.send(big_id, big[offset:], offset=offset), 200).json()
    assert done["digest"] == f"blake3:{b3(big)}"
    assert_content(fresh.api.content("term", "big.bin"), big)
    assert_content(fresh.api.content("term", "small.bin"), small)


# --- (c) metrics across workers ---------------------------------------------------------------------


def test_metrics_agree_across_workers_and_count_what_happened(services, data_dir) -> None:
    service = services.start(workers=2)
    wait_for(lambda: len(service.worker_pids()) == 2, 20, "two worker processes")
    a, b = os.urandom(600_000), os.urandom(300_001)
    expected: dict[tuple[str, str, str], int] = {}

    def count(route: str, method: str, status: int, times: int = 1) -> None:
        expected[(route, method, str(status))] = expected.get((route, method, str(status)), 0) + times

    # A new connection for every request, so that both workers take a share.
    with service.client(keep_alive=False) as api:
        api.upload("m", "a1", a, chunk_size=200_000)  # 1 create + 3 chunks
        api.upload("m", "a2", a)  # the same content again: deduplicated
        api.upload("m", "b", b)
        count(CREATE_ROUTE, "POST", 200, 3)
        count(SESSION_ROUTE, "POST", 200, 5)

        cancelled = api.create("m", "never", 1000)["id"]
        api.chunk(cancelled, b"x" * 100, offset=0)
        expect(api.http.delete(f"/v1/files/session:{cancelled}"), 204)
        count(CREATE_ROUTE, "POST", 200)
        count(SESSION_ROUTE, "POST", 200)
        count(SESSION_ROUTE, "DELETE", 204)

        completed = api.create("m", "tiny", 3)["id"]
        api.chunk(completed, b"abc", offset=0)
        expect(api.send(completed, b""), 409)  # already complete
        expect(api.session("0" * 32), 404)
        count(CREATE_ROUTE, "POST", 200)
        count(SESSION_ROUTE, "POST", 200)
        count(SESSION_ROUTE, "POST", 409)
        count(SESSION_ROUTE, "GET", 404)

        assert_content(api.content("m", "a1"), a)
        expect(api.content("m", "b", headers={"Range": "bytes=0-99"}), 206)
        expect(api.http.head("/v1/files/m/a2:content"), 200)
        expect(api.content("m", "missing"), 404)
        expect(api.http.get("/no/such/route"), 404)
        assert api.keys("m") == ["a1", "a2", "b", "tiny"]
        count(CONTENT_ROUTE, "GET", 200)
        count(CONTENT_ROUTE, "GET", 206)
        count(CONTENT_ROUTE, "HEAD", 200)
        count(CONTENT_ROUTE, "GET", 404)
        count("unmatched", "GET", 404)
        count("/v1/files/{bucket}", "GET", 200)

        # Until both workers have served requests (each wrote latency samples), a few more.
        def both_served() -> bool:
            if len(metric_writers(service, "histogram")) == 2:
                return True
            expect(api.http.get("/v1/files"), 200)
            count(CREATE_ROUTE, "GET", 200)
            return False

        wait_for(both_served, 20, "both workers to serve requests")

    received = 2 * len(a) + len(b) + 100 + 3
    served = len(a) + 100
    blobs = files_under(data_dir / "blobs")
    assert len(blobs) == 3  # a, b and "abc": a2 is the same blob as a1

    with service.client(keep_alive=False) as scraper:
        # The last request's counts land just after its response: wait until a scrape has them all,
        # and until a sweep has counted the blob store.
        def settled() -> Samples | None:
            samples = scrape(scraper)
            requests = {
                (dict(labels)["route"], dict(labels)["method"], dict(labels)["status"]): int(number)
                for (name, labels), number in samples.items()
                if name == "files_http_requests_total" and dict(labels)["route"] not in ("/metrics", "/healthz")
            }
            ready = requests == expected and value(samples, "files_blob_store_blobs") == len(blobs)
            return samples if ready else None

        first = wait_for(settled, 20, "the metrics to count every request and the blob store")
        # Every scrape, whichever worker answers it, shows the same totals.
        scrapes = [scrape(scraper) for _ in range(12)]

    for samples in scrapes:
        assert stable(samples) == stable(first)
    assert value(first, "files_bytes_received_total") == received
    assert value(first, "files_bytes_served_total") == served
    assert value(first, "files_sessions_total", event="created") == 5
    assert value(first, "files_sessions_total", event="completed") == 4
    assert value(first, "files_sessions_total", event="cancelled") == 1
    assert value(first, "files_sessions_total", event="expired") == 0
    assert value(first, "files_uploads_deduplicated_total") == 1
    assert value(first, "files_dedup_bytes_saved_total") == len(a)
    assert value(first, "files_blob_store_blobs") == len(blobs)
    assert value(first, "files_blob_store_bytes") == sum(path.stat().st_size for path in blobs)
    assert min(value(samples, "files_sweeper_runs_total") for samples in scrapes) > 0

    # The latency histogram: one observation per request, by route; cumulative buckets.
    per_route: dict[str, int] = {}
    for (route, _, _), times in expected.items():
        per_route[route] = per_route.get(route, 0) + times
    for route, times in per_route.items():
        name = "files_http_request_duration_seconds"
        assert value(first, f"{name}_count", route=route) == times, route
        assert value(first, f"{name}_bucket", route=route, le="+Inf") == times, route
        assert value(first, f"{name}_sum", route=route) > 0
        buckets = sorted(
            (float(dict(labels)["le"]), number)
            for (sample, labels), number in first.items()
            if sample == f"{name}_bucket" and dict(labels)["route"] == route
        )
        assert [number for _, number in buckets] == sorted(number for _, number in buckets), f"{route}: not cumulative"


def test_an_abandoned_session_with_bytes_counts_as_expired_once_swept(services, data_dir) -> None:
    service = services.start(workers=2, FILES_SESSION_TTL_SECONDS="1")
    with service.client(keep_alive=False) as api:
        abandoned = api.create("exp", "left.bin", 10_000)["id"]
        assert api.chunk(abandoned, os.urandom(4000), offset=0)["offset"] == 4000
        assert (data_dir / "partial" / abandoned).exists()
        samples = wait_for(
            lambda: (
                (samples := scrape(api)) and value(samples, "files_sessions_total", event="expired") >= 1 and samples
            ),
            20,
            "the sweep to count the abandoned session as expired",
        )
        assert value(samples, "files_sessions_total", event="expired") == 1
        assert value(samples, "files_sessions_total", event="created") == 1
        assert not (data_dir / "partial" / abandoned).exists()
        expect(api.session(abandoned), 404)


# --- (d) logs ---------------------------------------------------------------------------------------


def test_json_logs_one_line_per_request_with_the_request_id(services, data_dir) -> None:
    service = services.start(FILES_LOG_FORMAT="json")
    api = service.api
    content = os.urandom(5000)

    given = expect(
        api.http.post(
            "/v1/files",
            json={"bucket": "logs", "key": "a.bin", "mime_type": "application/x-test", "size": len(content)},
            headers={"X-Request-ID": "client-chose-this-1"},
        ),
        200,
    )
    assert given.headers["x-request-id"] == "client-chose-this-1"
    session_id = given.json()["id"]
    upload = expect(api.send(session_id, content, offset=0), 200)
    generated = upload.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(generated), generated
    missing = expect(api.http.get("/v1/files/logs/nothing-here", headers={"X-Request-ID": "client-404"}), 404)
    # An id with a space (not a header-safe token) is replaced by a generated one.
    replaced = expect(api.http.get("/healthz", headers={"X-Request-ID": "two words"}), 200).headers["x-request-id"]
    assert GENERATED_ID.fullmatch(replaced), replaced

    wanted = {"client-chose-this-1", generated, "client-404", replaced}
    logged = wait_for(
        lambda: wanted <= requests_logged(service).keys() and requests_logged(service), 10, "the access log lines"
    )

    expectations = {
        "client-chose-this-1": ("POST", CREATE_ROUTE, 200, len(given.request.content), len(given.content)),
        generated: ("POST", SESSION_ROUTE, 200, len(content), len(upload.content)),
        "client-404": ("GET", "/v1/files/{bucket}/{key:path}", 404, 0, len(missing.content)),
        replaced: ("GET", "/healthz", 200, 0, None),
    }
    for request_id, (method, route, status, bytes_in, bytes_out) in expectations.items():
        record = logged[request_id]
        assert (record["method"], record["route"], record["status"], record["bytes_in"]) == (
            method,
            route,
            status,
            bytes_in,
        )
        if bytes_out is not None:
            assert record["bytes_out"] == bytes_out
        assert isinstance(record["duration_ms"], (int, float)) and record["duration_ms"] >= 0
        assert record["level"] == "info" and record["time"].endswith("Z")
    assert "\\u001b" not in service.log_text(), "terminal colours in the JSON lines"
    # Route templates, never the concrete ids or names.
    for record in logged.values():
        assert session_id not in json.dumps(record) and "nothing-here" not in record["route"]

    # Sweeps log JSON lines of their own.
    sweep = wait_for(
        lambda: next((r for r in json_records(service) if r.get("event") == "sweep"), None), 10, "a sweep log line"
    )
    assert sweep["logger"] == "files.sweeper"
    assert {"partials_removed", "blobs_removed", "blobs", "blob_bytes"} <= sweep.keys()

    # An error: an entry file on the volume that is no longer valid JSON (a damaged disk, a bad edit).
    [entry_file] = files_under(data_dir / "entries")
    entry_file.write_bytes(b'{"bucket": "logs", "key": "a.b')
    broken = api.http.get("/v1/files/logs/a.bin", headers={"X-Request-ID": "client-500"})
    assert broken.status_code == 500
    assert broken.json()["detail"]
    assert broken.headers["x-request-id"] == "client-500"
    assert wait_for(lambda: requests_logged(service).get("client-500"), 10, "the 500's access line")["status"] == 500
    # The error line, with its traceback and the request's id, comes before the access line; and only once.
    [error] = [r for r in json_records(service) if r["level"] == "error" and r.get("request_id") == "client-500"]
    assert error["logger"] == "files.http" and "ValidationError" in error["exception"], error
    assert not [r for r in json_records(service) if r["level"] == "error" and r.get("request_id") is None]


def test_text_log_format_and_the_warning_level(services) -> None:
    text = services.start(name="text", FILES_LOG_FORMAT="text")
    quiet = services.start(name="quiet", FILES_LOG_LEVEL="warning")
    for service in (text, quiet):
        expect(service.api.http.get("/v1/files"), 200)
        expect(service.api.http.get("/v1/files/quiet/none"), 404)

    line = wait_for(
        lambda: next(
            (line for line in log_lines(text) if "files.access" in line and "GET /v1/files 200" in line), None
        ),
        10,
        "a text access line",
    )
    assert not line.startswith("{")
    for line in log_lines(text):
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)

    # At warning, the per-request info lines are not written (checked once the process is gone).
    quiet.stop()
    records = json_records(quiet)
    assert not [record for record in records if record.get("event") == "request"], records
    assert any(record["level"] == "warning" for record in records), "warnings are still logged"


@pytest.mark.parametrize(
    ("variable", "bad"),
    [("FILES_LOG_LEVEL", "loud"), ("FILES_LOG_FORMAT", "xml"), ("FILES_SHUTDOWN_GRACE_SECONDS", "soon")],
)
def test_invalid_operations_settings_exit_2(services, variable: str, bad: str) -> None:
    env = services.environment(redis_url=None, **{variable: bad})
    run = subprocess.run(
        service_command("serve", "--port", str(free_port())),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert variable in run.stderr and repr(bad) in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
