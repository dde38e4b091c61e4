"""`files-service` as a user runs it: the command line itself, through real processes."""

from __future__ import annotations

import socket
from pathlib import Path

from clirun import run_cli


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
