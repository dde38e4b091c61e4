"""Starting `serve` again with glibc's allocator tunables: when, and with what environment."""

from __future__ import annotations

import sys

import pytest

from service.ops import tuning

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or tuning.platform.libc_ver()[0] != "glibc", reason="glibc on Linux only"
)


@pytest.fixture
def execs(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(tuning.os, "execv", lambda path, argv: calls.append([path, *argv]))
    monkeypatch.setattr(tuning.sys, "orig_argv", ["python3", "-m", "service", "serve", "--port", "1"])
    return calls


def test_without_tunables_the_process_starts_again_with_them(monkeypatch, execs):
    monkeypatch.setenv("GLIBC_TUNABLES", "")  # so that the test's environment is restored after
    monkeypatch.delenv("GLIBC_TUNABLES")
    tuning.exec_with_allocator_tunables()
    assert execs == [[sys.executable, sys.executable, "-m", "service", "serve", "--port", "1"]]
    assert tuning.os.environ["GLIBC_TUNABLES"] == tuning.GLIBC_TUNABLES


def test_tunables_of_the_environment_are_kept_beside_ours(monkeypatch, execs):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    tuning.exec_with_allocator_tunables()
    assert len(execs) == 1
    assert tuning.os.environ["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{tuning.GLIBC_TUNABLES}"


@pytest.mark.parametrize("present", [tuning.GLIBC_TUNABLES, "glibc.malloc.trim_threshold=1000"])
def test_a_process_with_allocator_tunables_set_is_not_started_again(monkeypatch, execs, present):
    monkeypatch.setenv("GLIBC_TUNABLES", present)
    tuning.exec_with_allocator_tunables()
    assert execs == []
    assert tuning.os.environ["GLIBC_TUNABLES"] == present
