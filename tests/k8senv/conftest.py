"""Makes the `k8s_control_plane` fixture and the `e2e` marker available to these tests."""

from __future__ import annotations

import pytest

from .fixture import k8s_control_plane  # noqa: F401  (re-exported as a fixture)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs a real Kubernetes control plane (tests/k8senv)")
