"""Fixtures for the emulator's own tests: the emulator, and the real control plane to compare."""

from ..k8senv.fixture import k8s_control_plane
from .fixture import kube_emulator, kube_emulator_kubeconfig, kube_emulator_server

__all__ = ["k8s_control_plane", "kube_emulator", "kube_emulator_kubeconfig", "kube_emulator_server"]
