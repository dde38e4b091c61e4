"""`files-service` as a user runs it: the command line itself, through real processes."""

from __future__ import annotations

import hashlib
import json
import socket
import stat
from importlib.metadata import version
from pathlib import Path

import pytest
from clirun import run_cli


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_serve_on_a_busy_port_says_so_in_one_line_before_it_starts_anything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    stray = data / "partial" / ("0" * 32)  # no session owns it: any sweep would remove it
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left behind")
    with socket.socket() as occupier:
        occupier.bind(("127.0.0.1", 0))
        occupier.listen()
        port = occupier.getsockname()[1]
        result = run_cli("serve", "--port", str(port), env={"FILES_DATA_DIR": str(data)})

    assert result.returncode == 1, result
    assert result.stderr == (
        f"files-service: cannot listen on 127.0.0.1:{port}: address already in use "
        "(is another service running? choose another --port)\n"
    )
    assert result.stdout == ""
    assert stray.read_bytes() == b"left behind"
    assert sorted(path.relative_to(data) for path in data.rglob("*")) == [Path("partial"), stray.relative_to(data)]


def test_serve_on_an_address_of_another_machine_says_so(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: documentation only, never this machine's.
    result = run_cli("serve", "--host", "192.0.2.1", "--port", "8321", env={"FILES_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1, result
    assert result.stderr == "files-service: cannot listen on 192.0.2.1:8321: cannot assign requested address\n"


# --- token new --file ----------------------------------------------------------------------------


def test_token_new_with_a_file_creates_it_private_then_appends_and_refuses_a_taken_name(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    first = run_cli("token", "new", "ci", "--file", str(path))
    assert first.returncode == 0, first.stderr
    assert first.stderr == f"added token 'ci' (*: read, write) to {path}; restart the service to use it\n"
    ci_token = first.stdout.strip()
    assert first.stdout == f"{ci_token}\n" and len(ci_token) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    second = run_cli("token", "new", "reader", "--buckets", "models=read", "--buckets", "*=read", "--file", str(path))
    assert second.returncode == 0, second.stderr
    assert "(models: read; *: read)" in second.stderr
    reader_token = second.stdout.strip()
    assert json.loads(path.read_text()) == {
        "tokens": [
            {"name": "ci", "sha256": sha256(ci_token), "buckets": {"*": ["read", "write"]}},
            {"name": "reader", "sha256": sha256(reader_token), "buckets": {"models": ["read"], "*": ["read"]}},
        ]
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    before = path.read_bytes()
    taken = run_cli("token", "new", "ci", "--buckets", "models=delete", "--file", str(path))
    assert taken.returncode == 1
    assert taken.stderr == f"files-service: {path} has a token named 'ci' already; choose another name\n"
    assert taken.stdout == ""
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_token_new_keeps_the_mode_and_other_fields_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"comment": "kept", "tokens": []}))
    path.chmod(0o640)
    made = run_cli("token", "new", "ci", "--buckets", "models=delete,read,write,read", "--file", str(path))
    assert made.returncode == 0, made.stderr
    document = json.loads(path.read_text())
    assert document["comment"] == "kept"
    assert document["tokens"][0]["buckets"] == {"models": ["read", "write", "delete"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_token_new_refuses_an_invalid_token_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"tokens": [{"name": "x"}]}')
    refused = run_cli("token", "new", "ci", "--file", str(path))
    assert refused.returncode == 1
    assert refused.stderr.startswith(
        f"files-service: {path} is not a valid token file: tokens.0.sha256: Field required"
    )
    assert path.read_text() == '{"tokens": [{"name": "x"}]}'


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("models", "is not BUCKET=ACTIONS"),
        ("models=", "the actions are read, write, delete"),
        ("models=read,admin", "the actions are read, write, delete"),
        ("a.b=read", "bucket must be"),
    ],
)
def test_token_new_refuses_a_wrong_grant(tmp_path: Path, spec: str, problem: str) -> None:
    refused = run_cli("token", "new", "ci", "--buckets", spec, "--file", str(tmp_path / "tokens.json"))
    assert refused.returncode == 2
    assert problem in refused.stderr.splitlines()[-1]
    assert not (tmp_path / "tokens.json").exists()


# --- the command line itself -----------------------------------------------------------------------


def test_version_is_the_package_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"files-service {version('files-service')}\n")


def test_serve_help_describes_each_option_its_default_and_the_environment() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines where it likes
    for described in (
        "--host HOST the address to listen on (default: 127.0.0.1)",
        "--port PORT the TCP port to listen on (default: 8321)",
        "--workers WORKERS worker processes; above 1 needs FILES_REDIS_URL (default: 1)",
        "(default: FILES_LOG_LEVEL, else info)",
    ):
        assert described in text, result.stdout
    for variable in ("FILES_DATA_DIR", "FILES_REDIS_URL", "FILES_AUTH_TOKENS_FILE", "FILES_LOG_FORMAT"):
        assert f"\n  {variable} " in result.stdout, result.stdout


def test_events_without_a_shared_redis_say_so_in_one_line():
    refused = run_cli("events")
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "files-service: events need a shared Redis: set FILES_REDIS_URL "
        "(the embedded stand-in lives inside the service's process)"
    ]


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_that_is_none(port: str) -> None:
    """uvicorn would take 99999 and listen on 99999 mod 65536 while saying 99999."""
    refused = run_cli("serve", "--port", port)
    assert refused.returncode == 2
    assert "argument --port:" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("command", [["serve"], ["fsck"]])
def test_a_data_directory_that_cannot_be_made_is_one_line(command: list[str]) -> None:
    refused = run_cli(*command, env={"FILES_DATA_DIR": "/proc/no-such-place"})
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "files-service: FILES_DATA_DIR=/proc/no-such-place cannot be used: No such file or directory"
    ]


@pytest.mark.parametrize("command", [["fsck"], ["events"]])
def test_a_redis_out_of_reach_is_one_line(tmp_path: Path, command: list[str]) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    env = {"FILES_REDIS_URL": f"redis://127.0.0.1:{port}/0", "FILES_DATA_DIR": str(tmp_path)}
    refused = run_cli(*command, env=env, timeout=60)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("files-service: Redis (FILES_REDIS_URL) did not answer:"), refused.stderr
