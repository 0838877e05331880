"""A project-owned Kubernetes control plane for end-to-end tests (envtest-like + kwok).

Entry points:
    ControlPlane            start/stop etcd, kube-apiserver, controller-manager, scheduler, kwok
    Cluster                 what tests use: kubeconfig, admin_api_client(), sa_kubeconfig()
    fixture.k8s_control_plane   session-scoped pytest fixture yielding a Cluster
    python -m tests.k8senv  build | up | down | status

See README.md in this directory.
"""

from .behaviours import BEHAVIOUR_LABEL, Behaviour, pod_metadata
from .cluster import Cluster
from .controlplane import ControlPlane, ControlPlaneSettings
from .errors import ApiError, BinariesUnavailable, ControlPlaneError, K8sEnvError, StateError

__all__ = [
    "BEHAVIOUR_LABEL",
    "ApiError",
    "Behaviour",
    "BinariesUnavailable",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "ControlPlaneSettings",
    "K8sEnvError",
    "StateError",
    "pod_metadata",
]
