"""Job backends: where a workflow's Job runs. Chosen by name in settings, never by fallback."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from scheduler.settings import Settings
from workers.backends.base import JobBackend

if TYPE_CHECKING:
    from workers.budget import Budget


def make_backend(
    settings: Settings, environ: Mapping[str, str], budget: Budget | None = None
) -> JobBackend:
    """Build the backend `settings.backend` names; `budget` paces its Kubernetes API calls.

    Raises:
        RequestError: the kubernetes backend found no cluster configuration.
    """
    if settings.backend == "local":
        from workers.backends.local import LocalBackend

        return LocalBackend(settings)
    from workers.backends.kubernetes import KubernetesBackend

    return KubernetesBackend.from_settings(settings, dict(environ), budget)
