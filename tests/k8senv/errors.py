"""Errors of the test control plane, as one tree so callers can catch what they can act on.

K8sEnvError
├── BinariesUnavailable    the binaries are not built and could not be built here
├── ControlPlaneError      a component did not start, or did not stop
├── StateError             `up`/`down` state is missing, stale or unreadable
└── ApiError               the API server answered a request with an error status
"""

from __future__ import annotations


class K8sEnvError(Exception):
    """Base of every error raised by tests.k8senv."""


class BinariesUnavailable(K8sEnvError):
    """etcd, the kube binaries or kwok are missing and building them failed or was not allowed."""


class ControlPlaneError(K8sEnvError):
    """A component exited, timed out becoming ready, or survived being stopped.

    The message carries the tail of the component logs, so a CI failure explains itself.
    """


class StateError(K8sEnvError):
    """The state file of a detached control plane (`python -m tests.k8senv up`) is unusable."""


class ApiError(K8sEnvError):
    """An HTTP error status from the API server (or kwok), with Kubernetes' reason if any."""

    def __init__(self, status: int, reason: str, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
