"""Fixtures of the integration tests: real Redis servers and `files-service serve` processes.

- `shared_redis_url` (tests/conftest.py): FILES_TEST_REDIS_URL, else a redis-server started for the
  session; tests on it never flush it and each uses a prefix of its own (`redis_prefix`).
- `own_redis`: a redis-server of the test's own, on a free port, for tests that flush, kill or
  restart Redis or look at every key in it.
- `services`: starts service processes on one data directory; all are stopped at teardown.
- `browser`: a headless Chromium driven by selenium (tests/integration/browser.py), quit at teardown.
When a test fails, the output of every process it started is added to its report.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from .browser import start_chromium
from .harness import (
    Launcher,
    ManagedProcess,
    RedisServer,
    ServiceProcess,
    redis_server_binary,
    service_environment,
    unavailable,
)

PROCESSES = pytest.StashKey[list[ManagedProcess]]()
LOG_CHARACTERS = 30000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if report.failed:
        for process in item.stash.get(PROCESSES, []):
            report.sections.append((f"output of {process.name} ({process.log_path})", process.log_tail(LOG_CHARACTERS)))
    return report


@pytest.fixture
def redis_prefix() -> str:
    """A FILES_REDIS_PREFIX of this test's own, so tests on one Redis never see each other's keys."""
    return f"files-itest:{uuid.uuid4().hex}:"


@pytest.fixture
def launcher(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    request.node.stash[PROCESSES] = launcher.processes
    try:
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture
def own_redis(launcher: Launcher) -> RedisServer:
    """A redis-server only this test uses: it may flush, kill or restart it."""
    if redis_server_binary() is None:
        unavailable("this test needs a redis-server of its own (to flush, kill or restart), and none is on PATH")
    return launcher.redis()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    (tmp_path / "downloads").mkdir()
    driver = start_chromium(tmp_path / "downloads")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


SHARED = "shared"


class Services:
    """Starts service processes on the test's data directory and Redis prefix."""

    def __init__(
        self,
        request: pytest.FixtureRequest,
        launcher: Launcher,
        data_dir: Path,
        prefix: str,
        defaults: dict[str, str] | None = None,
    ) -> None:
        self.request = request
        self.launcher = launcher
        self.data_dir = data_dir
        self.prefix = prefix
        self.defaults = defaults or {}
        self.shared_urls: set[str] = set()

    def with_env(self, **env: str) -> Services:
        """The same, with these variables for every process it starts."""
        variant = Services(self.request, self.launcher, self.data_dir, self.prefix, {**self.defaults, **env})
        variant.shared_urls = self.shared_urls
        return variant

    def forget_keys(self) -> None:
        """Delete this test's keys (its prefix only) from the shared Redis, which is never flushed."""
        for url in self.shared_urls:
            with contextlib.closing(redis.Redis.from_url(url, socket_timeout=5)) as client:
                for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                    client.delete(key)

    def environment(self, redis_url: str | None = SHARED, **env: str) -> dict[str, str]:
        """`redis_url`: the shared Redis by default, a URL, or None for the embedded stand-in."""
        if redis_url == SHARED:
            redis_url = self.request.getfixturevalue("shared_redis_url")
            self.shared_urls.add(redis_url)
        return service_environment(self.data_dir, redis_url, self.prefix, **{**self.defaults, **env})

    def start_many(
        self, count: int, redis_url: str | None = SHARED, workers: int = 1, name: str = "service", **env: str
    ) -> list[ServiceProcess]:
        return self.launcher.services(count, self.environment(redis_url, **env), workers, name)

    def start(
        self, redis_url: str | None = SHARED, workers: int = 1, name: str = "service", **env: str
    ) -> ServiceProcess:
        return self.start_many(1, redis_url, workers, name, **env)[0]


@pytest.fixture
def services(
    request: pytest.FixtureRequest, launcher: Launcher, data_dir: Path, redis_prefix: str
) -> Iterator[Services]:
    services = Services(request, launcher, data_dir, redis_prefix)
    try:
        yield services
    finally:
        try:
            launcher.stop_all()  # first, so that no process writes a key after they are deleted
        finally:
            services.forget_keys()
