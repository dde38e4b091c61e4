"""The client's pieces that need no service: sizes, the progress bar, the console's lines, the state file."""

from __future__ import annotations

import argparse
import io
import socket
from pathlib import Path

import httpx
import pytest

from service.client import ClientError
from service.client.commands import chunk_size, service_url
from service.client.console import Console
from service.client.events import (
    Deduplicated,
    DownloadResumed,
    Event,
    Hashing,
    Retrying,
    SessionGone,
    SourceChanged,
    TransferEnded,
    TransferMoved,
    TransferRepositioned,
    TransferStarted,
    UploadResumed,
)
from service.client.progress import Progress, human
from service.client.retries import Retries
from service.client.state import SessionState, Source, Upload


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8388608", 8 * 2**20),
        ("8M", 8 * 2**20),
        ("512K", 512 * 1024),
        ("512k", 512 * 1024),
        ("1GiB", 2**30),
        ("4 MB", 4 * 2**20),
    ],
)
def test_chunk_size_accepts_numbers_and_suffixes(text: str, expected: int) -> None:
    assert chunk_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "0M", "-1", "8X", "1.5M", "M", "1", "4095"])
def test_chunk_size_refuses_the_rest(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        chunk_size(text)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("127.0.0.1:8321", "http://127.0.0.1:8321"),
        ("localhost:8321", "http://localhost:8321"),
        (" files.example.com ", "http://files.example.com"),
        ("https://files.example.com/base/", "https://files.example.com/base"),
        ("http://[::1]:8321", "http://[::1]:8321"),
    ],
)
def test_service_url_without_a_scheme_means_http(text: str, url: str) -> None:
    assert service_url(text) == url


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ftp://host", "its scheme is 'ftp', not http or https"),
        ("http://", "it names no host"),
        ("host:http", "port could not be cast to integer value as 'http'"),
        ("host:70000", "port out of range 0-65535"),
        ("http://a host", "it contains a space"),
        ("http://host/?x=1", "it has a query or fragment"),
    ],
)
def test_service_url_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        service_url(text)
    assert str(raised.value) == (
        f"the service URL {text!r} (--url or FILES_URL) is not usable: {problem}; e.g. http://127.0.0.1:8321"
    )


def test_a_host_name_that_does_not_resolve_is_not_tried_again() -> None:
    """A typo in --url would otherwise be retried for a minute; a resolver's temporary failure is."""
    calls = []

    def operation(errno: int) -> None:
        calls.append(errno)
        try:
            raise socket.gaierror(errno, "name resolution")
        except socket.gaierror as cause:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from cause

    with pytest.raises(httpx.ConnectError):
        Retries(60).call(lambda: operation(socket.EAI_NONAME))
    assert calls == [socket.EAI_NONAME]
    with pytest.raises(httpx.ConnectError):
        Retries(0.6).call(lambda: operation(socket.EAI_AGAIN))
    assert calls.count(socket.EAI_AGAIN) > 1  # tried again until out of time


def test_no_retries_with_zero_seconds() -> None:
    refused = httpx.ConnectError("refused")
    calls = []

    def operation() -> None:
        calls.append(1)
        raise refused

    with pytest.raises(httpx.ConnectError):
        Retries(0).call(operation)
    assert calls == [1]


def test_human_sizes() -> None:
    assert [human(n) for n in (0, 1023, 1536, 3 * 2**20, 2**50)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "3.0 MiB",
        "1024.0 TiB",
    ]


def test_progress_writes_whole_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("b/k", 4 * 2**20, position=2**20, stream=stream) as progress:
        for _ in range(100):
            progress.advance(30 * 1024)  # redrawn at most once per interval, not 100 times
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= 2
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("b/k [")
    assert "3.9 MiB / 4.0 MiB" in lines[-1] and "/s" in lines[-1] and "left" in lines[-1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_one_line_in_place_on_a_terminal() -> None:
    stream = Terminal()
    with Progress("b/k", 2**20, stream=stream) as progress:
        progress.advance(2**19)
        progress.update(0)  # a retry that starts the chunk again
        progress.advance(2**20)
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    # A redraw shorter than the one before is padded with spaces, which clear the rest of the line.
    last = text.rstrip("\n").split("\r")[-1].rstrip(" ")
    assert last.startswith("b/k [########################] 100% 1.0 MiB / 1.0 MiB") and last.endswith("done"), last


def test_state_remembers_one_upload_per_slot_and_writes_atomically(tmp_path: Path) -> None:
    state = SessionState(tmp_path / "deep" / "sessions.json")
    source = Source("http://h:1", "b", "k", "/data/f", 10, 123)
    other = Source("http://h:1", "b", "k2", "/data/f", 10, 123)
    state.remember(Upload(source, "s1", "blake3:x", "text/plain"))
    state.remember(Upload(other, "s2", "blake3:x", "text/plain"))
    changed = Source("http://h:1", "b", "k", "/data/f", 11, 456)

    assert state.find(changed) == Upload(source, "s1", "blake3:x", "text/plain")
    state.remember(Upload(changed, "s3", "blake3:y", "text/plain"))
    assert [(upload.source, upload.session_id) for upload in SessionState(state.path).uploads()] == [
        (other, "s2"),
        (changed, "s3"),
    ]
    state.forget(Upload(changed, "s3", "blake3:y", "text/plain"))
    assert [upload.session_id for upload in state.uploads()] == ["s2"]
    assert sorted(path.name for path in state.path.parent.iterdir()) == ["sessions.json"]


def test_state_file_that_is_not_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text("{not json")
    with pytest.raises(ClientError, match="not a valid client state file"):
        SessionState(path).uploads()


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (Retrying(httpx.ConnectError("refused"), 0.5), "files-service: refused; retrying in 0.5 s"),
        (Retrying(httpx.ReadTimeout(""), 1.25), "files-service: ReadTimeout; retrying in 1.25 s"),
        (Hashing("/d/f", 3 * 2**20), "computing the BLAKE3 digest of /d/f (3.0 MiB)"),
        (
            Deduplicated("b/k", 3 * 2**20),
            "b/k: the service holds this content already; nothing to send (3.0 MiB skipped)",
        ),
        (UploadResumed("s1", 42), "resuming upload session s1 at byte 42"),
        (SourceChanged("/d/f", "s1"), "/d/f has changed since upload session s1 began; starting anew"),
        (SessionGone("s1", midway=False), "upload session s1 is gone; starting a new one"),
        (
            SessionGone("s1", midway=True),
            "upload session s1 is gone (did the service restart?); starting a new one",
        ),
        (DownloadResumed(Path("f.part"), 7), "resuming f.part at byte 7"),
    ],
)
def test_console_says_each_notice_in_one_line_on_stderr(
    event: Event, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    Console()(event)
    assert capsys.readouterr() == ("", line + "\n")


def test_console_draws_a_transfer_as_a_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    console = Console()
    for event in (
        TransferStarted("b/k", 2**20, 0),
        TransferMoved(2**19),
        TransferRepositioned(2**18),
        TransferMoved(3 * 2**18),
        TransferEnded(),
    ):
        console(event)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1].startswith("b/k [########################] 100% 1.0 MiB / 1.0 MiB")
