"""The session-scoped pytest fixture `k8s_control_plane` (a `Cluster`).

Use it from a conftest.py:

    from tests.k8senv.fixture import k8s_control_plane  # noqa: F401

Which cluster (read from the environment here, at the entry point):
  * K8SENV_KUBECONFIG=path        use that cluster (e.g. `python -m tests.k8senv up`'s)
  * K8SENV_EXISTING=1 + KUBECONFIG  use $KUBECONFIG's current context
  * otherwise                            start a ControlPlane for the session (building the
                                         binaries first if needed; run .ci/build-k8s.sh ahead
                                         of pytest, since a cold build takes tens of minutes)
  * K8SENV_BIN_DIR=dir             take the binaries from dir instead of the build cache
  * K8SENV_KEEP=1               keep the work dir (certs, component logs) after the run
When the binaries are missing and cannot be built the tests are skipped, except under CI
(env CI set), where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from .cluster import Cluster
from .controlplane import ControlPlane, ControlPlaneSettings
from .errors import BinariesUnavailable


@dataclass(frozen=True)
class FixtureSettings:
    """What the fixture does, decided once from the environment."""

    existing_kubeconfig: Path | None
    """Use this cluster instead of starting one."""
    control_plane: ControlPlaneSettings
    """How to start one otherwise."""
    in_ci: bool
    """Fail instead of skip when the binaries are unavailable."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FixtureSettings:
        existing = env.get("K8SENV_KUBECONFIG")
        if not existing and env.get("K8SENV_EXISTING") == "1":
            existing = env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        bin_dir = env.get("K8SENV_BIN_DIR")
        return cls(
            existing_kubeconfig=Path(existing) if existing else None,
            control_plane=ControlPlaneSettings(
                bin_dir=Path(bin_dir) if bin_dir else None,
                keep_work_dir=env.get("K8SENV_KEEP") == "1",
            ),
            in_ci=bool(env.get("CI")),
        )


def open_cluster(settings: FixtureSettings) -> Iterator[Cluster]:
    """Yield an attached or freshly started cluster; clean up after."""
    if settings.existing_kubeconfig is not None:
        if not settings.existing_kubeconfig.is_file():
            pytest.fail(
                f"kubeconfig of the existing cluster not found: {settings.existing_kubeconfig}"
            )
        cluster = Cluster(settings.existing_kubeconfig)
        try:
            yield cluster
        finally:
            cluster.close()
        return
    plane = ControlPlane(settings.control_plane)
    try:
        plane.start()
    # Like a missing Redis: skip on a developer machine, fail in CI.
    except BinariesUnavailable as e:
        if settings.in_ci:
            pytest.fail(f"Kubernetes test binaries unavailable in CI: {e}")
        pytest.skip(f"Kubernetes test binaries unavailable: {e}")
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def k8s_control_plane() -> Iterator[Cluster]:
    """A real control plane (or the configured existing cluster) for the whole session."""
    yield from open_cluster(FixtureSettings.from_env(os.environ))
