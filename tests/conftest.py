from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.services import RedisServer, redis_server

pytest_plugins = ["tests.kube_emulator.fixture", "tests.k8senv.fixture"]


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> Iterator[str]:
    """A clean database on the session's real redis-server."""
    client = redis_srv.client()
    client.flushall()
    client.close()
    yield redis_srv.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No JOBFERRY_* or KUBECONFIG from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("JOBFERRY_") or name == "KUBECONFIG":
            monkeypatch.delenv(name)


@pytest.fixture
def tmp_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Expose each phase's report on the test item, so fixtures can print logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
