"""Pytest fixtures for the emulator: one server per session, reset before each test.

Starting a server costs a thread and a port; resetting one costs microseconds, and worker
processes started once per session keep a stable URL. Load them from the root conftest with
``pytest_plugins = ["tests.kube_emulator.fixture"]`` (or import the fixtures).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._emulator import KubeEmulator


@pytest.fixture(scope="session")
def kube_emulator_server() -> Iterator[KubeEmulator]:
    """The session's emulator, as last left by a test; prefer ``kube_emulator``."""
    with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def kube_emulator_kubeconfig(
    kube_emulator_server: KubeEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig file for the session's emulator (context ``emulator``)."""
    return kube_emulator_server.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig")


@pytest.fixture
def kube_emulator(kube_emulator_server: KubeEmulator) -> Iterator[KubeEmulator]:
    """The emulator, reset: namespace ``default`` only, no faults, empty request log.

    Fails the test at teardown if the emulator itself broke while serving it.
    """
    kube_emulator_server.reset()
    yield kube_emulator_server
    if errors := kube_emulator_server.internal_errors:
        pytest.fail(f"the Kubernetes emulator failed while serving this test: {errors!r}")
