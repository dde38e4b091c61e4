"""The client commands (`files-service upload|download|ls|info|rm|sessions`), run as processes against a service."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.client.api import ApiError, FilesClient

from .harness import (
    OCTET_STREAM,
    Launcher,
    ManagedProcess,
    MiB,
    ServiceProcess,
    assert_content,
    b3,
    expect,
    free_port,
    service_command,
    wait_for,
)

COMMAND_SECONDS = 120
# Tiny chunks make an upload of a few MiB take a few seconds: long enough to interrupt it midway.
SLOW_CHUNK = "4K"
SLOW_FILE_BYTES = 4 * MiB + 4321


@dataclass
class Client:
    """Runs `files-service <client command>` against one service, from a directory of its own."""

    service: ServiceProcess
    launcher: Launcher
    directory: Path
    token: str | None = None

    @property
    def state_path(self) -> Path:
        return self.directory / "state" / "sessions.json"

    def environment(self) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("FILES_")}
        env.update(FILES_URL=self.service.base_url, FILES_CLIENT_STATE=str(self.state_path), PYTHONUNBUFFERED="1")
        if self.token is not None:
            env["FILES_TOKEN"] = self.token
        return env

    def run(
        self, *arguments: str, status: int = 0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to its end (killed if it outlives COMMAND_SECONDS) and check its exit status."""
        done = subprocess.run(
            service_command(*arguments),
            check=False,
            env={**self.environment(), **(env or {})},
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
        )
        assert done.returncode == status, (
            f"`files-service {' '.join(arguments)}` exited with {done.returncode}, expected {status}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return done

    def start(self, *arguments: str) -> ManagedProcess:
        """Start a command in the background (stopped at the test's end by the launcher)."""
        return self.launcher.command("client", service_command(*arguments), self.environment())

    def uploads(self) -> list[dict]:
        """The uploads in progress the client remembers (its state file)."""
        try:
            return json.loads(self.state_path.read_text())["uploads"]
        except FileNotFoundError:
            return []

    def file(self, name: str, content: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(content)
        return path


@pytest.fixture
def client_for(launcher: Launcher, tmp_path: Path) -> Callable[..., Client]:
    def make(service: ServiceProcess, token: str | None = None) -> Client:
        directory = tmp_path / f"client-{service.name}"
        directory.mkdir(exist_ok=True)
        return Client(service, launcher, directory, token)

    return make


@pytest.fixture
def service(services) -> ServiceProcess:
    return services.start()


@pytest.fixture
def client(client_for, service: ServiceProcess) -> Client:
    return client_for(service)


def fields(output: str) -> dict[str, str]:
    """The `name: value` lines `upload` prints."""
    return dict(re.findall(r"^(\w+):\s+(.*)$", output, re.MULTILINE))


def resumed_at(stderr: str, session_id: str) -> int:
    match = re.search(rf"resuming upload session {session_id} at byte (\d+)", stderr)
    assert match, f"the client did not say it resumed session {session_id}:\n{stderr}"
    return int(match[1])


def upload_in_progress(client: Client, path: Path, target: str) -> tuple[ManagedProcess, str, int]:
    """Start `upload` with tiny chunks; once the server holds part of the file: the process, session and offset."""
    process = client.start("upload", str(path), target, "--chunk-size", SLOW_CHUNK)

    def started() -> tuple[str, int] | None:
        process.check_alive()
        uploads = client.uploads()
        if not uploads:
            return None
        session_id = uploads[0]["session_id"]
        offset = client.service.api.offset(session_id)
        return (session_id, offset) if offset > 0 else None

    session_id, offset = wait_for(started, 60, "the upload to get its first chunks to the server")
    return process, session_id, offset


def killed_upload(client: Client, path: Path, target: str) -> tuple[str, int]:
    """An upload SIGKILLed midway: its session and the offset the server had reached before the kill."""
    process, session_id, offset = upload_in_progress(client, path, target)
    process.kill()
    assert client.service.api.offset(session_id) < path.stat().st_size, "the upload ended before it could be killed"
    return session_id, offset


# --- upload --------------------------------------------------------------------------------------


def test_upload_in_chunks_prints_the_file_and_forgets_the_session(client: Client) -> None:
    content = os.urandom(300_001)
    path = client.file("data.bin", content)
    done = client.run("upload", str(path), "up/nested/data.bin", "--chunk-size", "64K")

    printed = fields(done.stdout)
    assert printed["key"] == "nested/data.bin"
    assert printed["bytes"] == str(len(content))
    assert printed["digest"] == f"blake3:{b3(content)}"
    assert_content(client.service.api.content("up", "nested/data.bin"), content)
    assert expect(client.service.api.info("up", "nested/data.bin"), 200).json()["mime_type"] == OCTET_STREAM
    assert "100%" in done.stderr, "no final progress line"
    assert client.uploads() == []


def test_upload_mime_type_guessed_or_given_and_empty_file(client: Client) -> None:
    text = client.file("notes.txt", b"hello\n")
    client.run("upload", str(text), "up/notes.txt")
    client.run("upload", str(text), "up/notes.dat", "--mime-type", "application/x-notes")
    client.run("upload", str(client.file("empty", b"")), "up/empty")

    api = client.service.api
    assert expect(api.info("up", "notes.txt"), 200).json()["mime_type"] == "text/plain"
    assert expect(api.info("up", "notes.dat"), 200).json()["mime_type"] == "application/x-notes"
    assert_content(api.content("up", "empty"), b"")
    assert client.uploads() == []


def test_uploading_content_the_service_holds_sends_no_byte_and_says_so(client: Client) -> None:
    content = os.urandom(2 * MiB + 4321)
    path = client.file("twice.bin", content)
    client.run("upload", str(path), "dedup/first.bin", "--chunk-size", "256K")
    received = bytes_received(client.service)
    assert received >= len(content)

    second = client.run("upload", str(path), "other/second.bin")

    assert "other/second.bin: the service holds this content already; nothing to send (2.0 MiB skipped)" in (
        second.stderr.splitlines()
    )
    assert "%" not in second.stderr, f"a progress bar, yet nothing was to be sent:\n{second.stderr}"
    assert bytes_received(client.service) == received
    assert fields(second.stdout)["digest"] == f"blake3:{b3(content)}"
    assert_content(client.service.api.content("other", "second.bin"), content)
    blobs = [path.name for path in (client.service.data_dir / "blobs").rglob("*") if path.is_file()]
    assert blobs == [b3(content)]
    assert client.uploads() == []


def bytes_received(service: ServiceProcess) -> float:
    """Upload bytes the service has received in request bodies, from its /metrics."""
    metrics = expect(service.api.http.get("/metrics"), 200).text
    found = re.search(r"^files_bytes_received_total (\S+)$", metrics, re.MULTILINE)
    assert found, "no files_bytes_received_total in /metrics"
    return float(found[1])


def test_the_server_refuses_content_that_does_not_match_the_declared_digest(service: ServiceProcess) -> None:
    content = os.urandom(100_000)
    with FilesClient(service.base_url) as api:
        created = api.create_session("digests", "wrong.bin", len(content), OCTET_STREAM, f"blake3:{b3(b'other')}")
        half = len(content) // 2
        assert api.upload_chunk(created["id"], [content[:half]], 0, half)["offset"] == half
        with pytest.raises(ApiError) as stale:
            api.upload_chunk(created["id"], [b"x"], 1, 1)
        assert (stale.value.status, stale.value.offset) == (409, half)
        with pytest.raises(ApiError) as refused:
            api.upload_chunk(created["id"], [content[half:]], half, len(content) - half)
        assert (refused.value.status, refused.value.code) == (422, "digest_mismatch")
    expect(service.api.info("digests", "wrong.bin"), 404)


def test_killed_upload_resumes_its_session_when_run_again(client: Client) -> None:
    content = os.urandom(SLOW_FILE_BYTES)
    path = client.file("slow.bin", content)
    session_id, offset = killed_upload(client, path, "resume/slow.bin")

    listed = client.run("sessions").stdout
    row = next(line for line in listed.splitlines() if session_id in line)
    shown = int(re.search(rf"(\d+) / {len(content)}", row)[1])
    assert offset <= shown < len(content)
    assert str(path) in row and "resume/slow.bin" in row

    done = client.run("upload", str(path), "resume/slow.bin", "--chunk-size", SLOW_CHUNK)
    assert resumed_at(done.stderr, session_id) >= offset
    assert fields(done.stdout)["digest"] == f"blake3:{b3(content)}"
    # The session the killed client opened is the one that completed the file.
    assert client.service.api.offset(session_id) == len(content)
    assert_content(client.service.api.content("resume", "slow.bin"), content)
    assert client.uploads() == []
    assert client.run("sessions").stdout.strip() == "no uploads in progress"


def test_resumed_upload_of_a_file_changed_behind_its_back_is_refused_by_the_digest(client: Client) -> None:
    content = os.urandom(SLOW_FILE_BYTES)
    path = client.file("tampered.bin", content)
    killed_upload(client, path, "resume/tampered.bin")
    # Change the last byte (not sent yet) but keep size and mtime: the client takes it for the same file,
    # so only the digest it declared at the start can tell.
    stat = path.stat()
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 0xFF]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    refused = client.run("upload", str(path), "resume/tampered.bin", status=1)
    assert "resuming upload session" in refused.stderr
    assert re.search(r"^files-service: .*digest", refused.stderr, re.MULTILINE), refused.stderr
    expect(client.service.api.info("resume", "tampered.bin"), 404)
    assert client.uploads() == []


def test_a_gone_session_or_a_changed_file_starts_a_new_upload(client: Client) -> None:
    content = os.urandom(SLOW_FILE_BYTES)
    path = client.file("again.bin", content)
    target = "resume/again.bin"

    first, _ = killed_upload(client, path, target)
    expect(client.service.api.http.delete(f"/v1/files/session:{first}"), 204)
    row = next(line for line in client.run("sessions").stdout.splitlines() if first in line)
    assert " gone " in row
    done = client.run("upload", str(path), target)
    assert f"upload session {first} is gone; starting a new one" in done.stderr
    assert_content(client.service.api.content("resume", "again.bin"), content)

    # Else the service holds the content, and the next upload sends nothing that could be killed.
    expect(client.service.api.delete("resume", "again.bin"), 200)
    second, _ = killed_upload(client, path, target)
    changed = content + b"more"
    path.write_bytes(changed)
    done = client.run("upload", str(path), target)
    assert "has changed since upload session" in done.stderr
    expect(client.service.api.session(second), 404)  # the stale session was cancelled
    assert_content(client.service.api.content("resume", "again.bin"), changed)
    assert client.uploads() == []


def test_upload_rides_out_a_service_restart(client: Client) -> None:
    content = os.urandom(SLOW_FILE_BYTES)
    path = client.file("restart.bin", content)
    process, session_id, _ = upload_in_progress(client, path, "restart/file.bin")

    client.service.kill()
    client.service.launch()  # the same port, Redis and data directory
    client.service.wait_ready()

    assert process.wait_exit(COMMAND_SECONDS) == 0, process.log_tail()
    assert "retrying" in process.log_text()
    assert client.service.api.offset(session_id) == len(content)
    assert_content(client.service.api.content("restart", "file.bin"), content)


def test_upload_starts_a_new_session_when_a_restart_lost_its_own(services, client_for) -> None:
    """With the embedded Redis stand-in, a restarted service knows no session of before."""
    client = client_for(services.start(redis_url=None))
    content = os.urandom(SLOW_FILE_BYTES)
    path = client.file("lost.bin", content)
    process, session_id, _ = upload_in_progress(client, path, "restart/lost.bin")

    client.service.kill()
    client.service.launch()
    client.service.wait_ready()

    assert process.wait_exit(COMMAND_SECONDS) == 0, process.log_tail()
    assert f"upload session {session_id} is gone (did the service restart?); starting a new one" in process.log_text()
    assert_content(client.service.api.content("restart", "lost.bin"), content)
    expect(client.service.api.session(session_id), 404)
    assert client.uploads() == []


# --- download ------------------------------------------------------------------------------------


def test_download_whole_and_resumed_from_a_part_file(client: Client) -> None:
    content = os.urandom(3 * MiB + 11)
    client.service.api.upload("down", "dir/model.bin", content, chunk_size=MiB)

    done = client.run("download", "down/dir/model.bin")
    assert (client.directory / "model.bin").read_bytes() == content
    assert f"blake3:{b3(content)}" in done.stdout

    target = client.directory / "resumed.bin"
    part = client.directory / "resumed.bin.part"
    part.write_bytes(content[: MiB + 5])
    done = client.run("download", "down/dir/model.bin", str(target))
    assert f"resuming {part} at byte {MiB + 5}" in done.stderr
    assert target.read_bytes() == content
    assert not part.exists()


def test_download_never_replaces_a_local_file_without_force(client: Client) -> None:
    content = os.urandom(100_000)
    source = client.file("model.bin", content)
    client.run("upload", str(source), "down/model.bin")
    changed = os.urandom(1000)
    client.service.api.upload("down", "model.bin", changed)

    # The default name is the file uploaded from, and naming it explicitly is no licence either.
    for path, shown in ((), "model.bin"), ((str(source),), str(source)), ((".",), "model.bin"):
        refused = client.run("download", "down/model.bin", *path, status=1)
        assert refused.stderr == f"files-service: {shown} exists; add --force to replace it\n"
    assert source.read_bytes() == content
    assert not list(client.directory.glob("*.part"))

    client.run("download", "down/model.bin", "--force")
    assert source.read_bytes() == changed


def test_download_of_content_that_does_not_match_its_etag_keeps_no_file(client: Client) -> None:
    content = os.urandom(MiB)
    client.service.api.upload("down", "file.bin", content)
    target = client.directory / "file.bin"
    part = client.directory / "file.bin.part"
    part.write_bytes(os.urandom(1000))  # not the file's first 1000 bytes

    failed = client.run("download", "down/file.bin", str(target), status=1)
    assert "files-service: the downloaded content's BLAKE3 is" in failed.stderr
    assert b3(content) in failed.stderr
    assert not target.exists() and not part.exists()

    client.run("download", "down/file.bin", str(target))
    assert target.read_bytes() == content


# --- ls, info, rm, errors ------------------------------------------------------------------------


def test_ls_info_and_rm(client: Client) -> None:
    api = client.service.api
    api.upload("alpha", "b.txt", b"bee", mime_type="text/plain")
    api.upload("alpha", "dir/a.bin", b"a" * 1234)
    api.upload("alpha", "dir/c.bin", b"")
    api.upload("beta", "z", b"zed")

    assert client.run("ls").stdout.split() == ["alpha", "beta"]
    assert json.loads(client.run("ls", "--json").stdout) == ["alpha", "beta"]

    table = client.run("ls", "alpha").stdout.splitlines()
    assert table[0].split() == ["KEY", "BYTES", "MIME", "TYPE", "CREATED"]
    assert [line.split()[:3] for line in table[1:]] == [
        ["b.txt", "3", "text/plain"],
        ["dir/a.bin", "1234", OCTET_STREAM],
        ["dir/c.bin", "0", OCTET_STREAM],
    ]
    assert [line.split()[0] for line in client.run("ls", "alpha/dir/").stdout.splitlines()[1:]] == [
        "dir/a.bin",
        "dir/c.bin",
    ]
    assert json.loads(client.run("ls", "alpha", "--json").stdout) == api.files("alpha")

    assert (
        json.loads(client.run("info", "alpha/dir/a.bin").stdout) == expect(api.info("alpha", "dir/a.bin"), 200).json()
    )
    removed = client.run("rm", "alpha/dir/a.bin").stdout
    assert removed.strip() == f"removed alpha/dir/a.bin (1234 bytes, blake3:{b3(b'a' * 1234)})"
    expect(api.info("alpha", "dir/a.bin"), 404)


def test_listing_pages_through_has_more(service: ServiceProcess) -> None:
    keys = [f"k{number:02d}" for number in range(7)]
    for key in keys:
        service.api.upload("paged", key, key.encode())
    with FilesClient(service.base_url) as api:
        assert [file["key"] for file in api.list("paged", page_size=2)] == keys
        assert [file["key"] for file in api.list("paged", prefix="k0", page_size=3)] == keys


def test_errors_say_what_went_wrong(client: Client) -> None:
    unknown = client.run("info", "nothing/here.bin", status=1)
    assert unknown.stderr.strip() == "files-service: no file 'here.bin' in bucket 'nothing'"
    assert client.run("rm", "nothing/here.bin", status=1).stderr.startswith("files-service: no file")
    assert client.run("download", "nothing/here.bin", status=1).stderr.startswith("files-service: no file")
    assert not list(client.directory.glob("here.bin*"))

    assert "is not bucket/key" in client.run("info", "no-key", status=2).stderr
    exists = str(client.file("exists.bin", b"x"))
    assert "not a positive size" in client.run("upload", exists, "a/b", "--chunk-size", "lots", status=2).stderr
    assert "not a readable file" in client.run("upload", "missing.bin", "a/b", status=2).stderr

    port = free_port()
    unreachable = client.run("ls", "--url", f"http://127.0.0.1:{port}", "--retry-seconds", "0", status=1)
    assert unreachable.stderr == (
        f"files-service: cannot talk to 127.0.0.1:{port}: [Errno 111] Connection refused "
        "(is the service running there? see --url)\n"
    )
    wrong = client.run("ls", "--url", "ftp://127.0.0.1", status=2)
    assert wrong.stderr == (
        "files-service: the service URL 'ftp://127.0.0.1' (--url or FILES_URL) is not usable: "
        "its scheme is 'ftp', not http or https; e.g. http://127.0.0.1:8321\n"
    )
    assert "port out of range" in client.run("ls", "--url", "127.0.0.1:99999", status=2).stderr


def test_global_options_go_before_or_after_the_command_and_a_url_needs_no_scheme(client: Client) -> None:
    client.service.api.upload("opts", "k", b"v")
    host_and_port = client.service.base_url.removeprefix("http://")
    nobody = f"127.0.0.1:{free_port()}"
    # FILES_URL points at nobody: each form below must have been taken, or `ls` fails.
    with_nobody = {"FILES_URL": nobody, "FILES_RETRY_SECONDS": "0"}
    for arguments in (
        ["--url", host_and_port, "ls"],
        ["ls", "--url", host_and_port],
        ["--url", nobody, "ls", "--url", host_and_port],
    ):
        assert client.run(*arguments, env=with_nobody).stdout.split() == ["opts"], arguments
    listed = client.run("--url", client.service.base_url + "/", "--retry-seconds", "0", "ls", "opts", env=with_nobody)
    assert listed.stdout.splitlines()[1].split()[:2] == ["k", "1"]
    refused = client.run("--url", host_and_port, "ls", "--url", nobody, env=with_nobody, status=1)
    assert refused.stderr.startswith(f"files-service: cannot talk to {nobody}")


def test_every_command_waits_for_a_service_that_comes_back_within_the_retry_time(client: Client) -> None:
    client.service.api.upload("back", "k", b"v")
    client.service.kill()
    listing = client.start("ls", "back", "--retry-seconds", "60")
    wait_for(lambda: "retrying" in listing.log_text(), 30, "ls to retry the stopped service")
    client.service.launch()  # the same port, Redis and data directory
    client.service.wait_ready()
    assert listing.wait_exit(COMMAND_SECONDS) == 0, listing.log_tail()
    assert re.search(r"^k +1 ", listing.log_text(), re.MULTILINE), listing.log_text()

    client.service.kill()
    gave_up = client.run("info", "back/k", env={"FILES_RETRY_SECONDS": "1"}, status=1)
    assert "retrying in" in gave_up.stderr
    assert gave_up.stderr.splitlines()[-1].startswith("files-service: cannot talk to 127.0.0.1")


# --- access tokens -------------------------------------------------------------------------------


def test_token_from_files_token(services, client_for, tmp_path: Path) -> None:
    made = subprocess.run(service_command("token", "new", "ci"), capture_output=True, text=True, check=True)
    token = re.search(r"^token: (\S+)$", made.stdout, re.MULTILINE)[1]
    entry = json.loads(made.stdout[made.stdout.index("{") :])
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"tokens": [entry]}))
    guarded = services.start(FILES_AUTH_TOKENS_FILE=str(tokens_file))

    anonymous = client_for(guarded)
    assert "Bearer" in anonymous.run("ls", status=1).stderr
    assert "not valid" in anonymous.run("ls", "--token", "wrong", status=1).stderr

    holder = client_for(guarded, token=token)
    content = os.urandom(70_000)
    holder.run("upload", str(holder.file("t.bin", content)), "guarded/t.bin", "--chunk-size", "16K")
    assert holder.run("ls").stdout.split() == ["guarded"]
    holder.run("download", "guarded/t.bin", "copy.bin")
    assert (holder.directory / "copy.bin").read_bytes() == content
    # The token of `token new` may read and write, not delete.
    assert "may not delete" in holder.run("rm", "guarded/t.bin", status=1).stderr
    # `--token=` form: a token may start with "-", which argparse would take for an option.
    assert anonymous.run("ls", f"--token={token}").stdout.split() == ["guarded"]


def test_tokens_added_by_token_new_file_work_with_their_grants(services, client_for, tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"

    def new_token(*arguments: str) -> str:
        made = subprocess.run(
            service_command("token", "new", *arguments, "--file", str(tokens_file)),
            capture_output=True,
            text=True,
            check=True,
        )
        return made.stdout.strip()

    writer = new_token("writer", "--buckets", "models=read,write,delete")
    reader = new_token("reader", "--buckets", "*=read")
    guarded = services.start(FILES_AUTH_TOKENS_FILE=str(tokens_file))

    writing = client_for(guarded, token=writer)
    content = os.urandom(50_000)
    writing.run("upload", str(writing.file("w.bin", content)), "models/w.bin")
    elsewhere = writing.run("upload", str(writing.file("o.bin", b"o")), "other/o.bin", status=1)
    assert elsewhere.stderr == "files-service: token 'writer' may not write to bucket 'other' (it has: nothing)\n"

    reading = client_for(guarded, token=reader)
    assert reading.run("ls").stdout.split() == ["models"]
    reading.run("download", "models/w.bin", "copy.bin")
    assert (reading.directory / "copy.bin").read_bytes() == content
    refused = reading.run("upload", str(reading.file("r.bin", b"r")), "models/r.bin", status=1)
    # Refused before the file is hashed, which for a large file takes a while.
    assert refused.stderr == "files-service: token 'reader' may not write to bucket 'models' (it has: read)\n"
    assert "may not delete" in reading.run("rm", "models/w.bin", status=1).stderr

    writing.run("rm", "models/w.bin")
    expect(guarded.api.info("models", "w.bin"), 401)
    assert reading.run("ls", "models").stdout.splitlines() == ["KEY  BYTES  MIME TYPE  CREATED"]
