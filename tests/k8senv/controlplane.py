"""A real Kubernetes control plane on loopback, for end-to-end tests: `ControlPlane`.

There is no Docker engine here, so no kind/k3d/minikube. Instead, as envtest does, run the
real etcd + kube-apiserver, and add the real kube-controller-manager (Job controller,
TTL-after-finished, garbage collector...) and kube-scheduler, with kwok standing in for
the kubelet on one fake Node. Job semantics (backoffLimit, activeDeadlineSeconds, TTL,
propagation policies, RBAC) are therefore Kubernetes' own; only container execution is
simulated (see stages/ and behaviours.py).

    with ControlPlane() as cp:
        api = cp.admin_api_client()
        ...
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import components
from .binaries import Binaries, ensure_binaries
from .cluster import Cluster
from .components import KWOK_NODE_ANNOTATION, Layout, Ports
from .errors import ApiError, BinariesUnavailable, ControlPlaneError, K8sEnvError, StateError
from .kubeconfig import cert_user, write_kubeconfig
from .logs import DEFAULT_LOG_TEXT, write_cri_log
from .pki import Pki, create_pki
from .processes import ProcessRecord, is_running, spawn, stop_all, tail
from .rest import Credentials, RestClient

_POLL = 0.2
_PACKAGE_ROOT = Path(__file__).resolve().parents[len((__package__ or "k8senv").split("."))]


@dataclass(frozen=True)
class ControlPlaneSettings:
    """How to start a control plane. Build it at the entry point (CLI, fixture)."""

    bin_dir: Path | None = None
    """Directory with etcd, kube-apiserver, ... to use instead of the build cache (default)."""
    build_if_missing: bool = True
    """Run .ci/build-k8s.sh when the cached binaries are missing (tens of minutes cold)."""
    work_dir: Path | None = None
    """Where certs, etcd data and logs go. Default: a new temp dir."""
    keep_work_dir: bool = False
    """Keep work_dir after stop (it is always kept when start fails, for the logs)."""
    detached: bool = False
    """Leave the processes running when this Python process exits (for `up`)."""
    start_timeout: float = 180.0
    """Seconds for everything to become ready, after the binaries exist."""
    stop_grace: float = 10.0
    """Seconds between SIGTERM and SIGKILL on stop."""
    node_name: str = "kwok-node-0"
    """Name of the fake Node that kwok manages."""


class ControlPlane(Cluster):
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and a log binder.

    Attributes (after start):
        kubeconfig: admin kubeconfig (system:masters).
        work_dir: certs, etcd data, component logs (logs/), pod logs (pod-logs/).
        records: one ProcessRecord per component.
        startup_seconds: how long start() took.
    """

    def __init__(self, settings: ControlPlaneSettings | None = None) -> None:
        self.settings = settings or ControlPlaneSettings()
        work_dir = self.settings.work_dir or Path(tempfile.mkdtemp(prefix="jobferry-k8senv-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        self.layout = Layout(work_dir)
        super().__init__(self.layout.kubeconfig, work_dir)
        self.records: list[ProcessRecord] = []
        self.ports: Ports | None = None
        self._popens: list[subprocess.Popen[bytes]] = []
        self.startup_seconds = 0.0
        self.timings: dict[str, float] = {}
        """Seconds from start() until each readiness check passed (for diagnosing slowness)."""
        self._began = 0.0
        self._stopped = False
        self._apiserver_argv: list[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def audit_log(self) -> Path | None:
        return self.layout.audit_log

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start every component and wait until the cluster can run Jobs.

        Raises:
            BinariesUnavailable: binaries missing and not buildable.
            ControlPlaneError: a component died or was not ready in time (logs attached).
        """
        try:
            binaries = ensure_binaries(
                self.settings.bin_dir, build_if_missing=self.settings.build_if_missing
            )
        # Nothing started yet: drop the empty work dir (unless asked to keep it) and re-raise.
        except BinariesUnavailable:
            self._stop_quietly()
            raise
        self._began = began = time.monotonic()
        if not self.settings.detached:
            atexit.register(self._stop_quietly)
        try:
            self._start(binaries, deadline=began + self.settings.start_timeout)
        # Whatever went wrong, leave no process behind; keep work_dir for its logs.
        except BaseException:
            self._stop_quietly(keep=True)
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, *, keep: bool | None = None) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and remove work_dir unless kept.

        Raises:
            ControlPlaneError: a process survived SIGKILL.
        """
        if self._stopped:
            return
        self._stopped = True
        stop_all(list(reversed(self.records)), self._popens, grace=self.settings.stop_grace)
        if not (self.settings.keep_work_dir if keep is None else keep):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- faults ------------------------------------------------------------------------------

    def stop_apiserver(self) -> None:
        """Stop kube-apiserver alone (SIGTERM, SIGKILL at once: an outage, not a drain).

        Clients then see refused connections on the same address until `start_apiserver()`.
        """
        record = self._record("kube-apiserver")
        stop_all([record], self._popens, grace=0.0)
        self.records.remove(record)

    def start_apiserver(self, timeout: float = 120.0) -> None:
        """Start kube-apiserver again on the same port, with the same certificates and etcd."""
        if self._apiserver_argv is None:
            raise ControlPlaneError("start_apiserver() needs a control plane started here")
        if any(r.name == "kube-apiserver" for r in self.records):
            raise ControlPlaneError("kube-apiserver is already running")
        self._spawn("kube-apiserver", self._apiserver_argv)
        self._wait(
            "kube-apiserver /readyz after a restart",
            lambda: self.rest().get_text("/readyz") == "ok",
            time.monotonic() + timeout,
        )

    def _record(self, name: str) -> ProcessRecord:
        for record in self.records:
            if record.name == name:
                return record
        raise ControlPlaneError(f"no running {name} in this control plane")

    def _stop_quietly(self, keep: bool = False) -> None:
        try:
            self.stop(keep=keep or None)
        # Called from atexit or while another error propagates: report, do not mask it.
        except K8sEnvError as e:
            print(f"k8senv: stop failed: {e}", file=sys.stderr)

    # -- start sequence --------------------------------------------------------------------

    def _start(self, binaries: Binaries, *, deadline: float) -> None:
        pki = create_pki(self.layout.pki_dir, node_name=self.settings.node_name)
        self.ports = ports = Ports.pick()
        write_kubeconfig(
            self.layout.kubeconfig,
            server=f"https://127.0.0.1:{ports.apiserver}",
            ca_pem=pki.ca.cert.read_bytes(),
            user=cert_user(pki.admin.cert, pki.admin.key),
        )
        write_cri_log(self.layout.default_pod_log, DEFAULT_LOG_TEXT)
        components.write_kwok_config(self.layout)
        components.write_audit_policy(self.layout)

        self._spawn("etcd", components.etcd_argv(binaries, self.layout, ports))
        self._wait(
            "etcd /health",
            lambda: _http_ok(f"http://127.0.0.1:{ports.etcd_client}/health", '"true"'),
            deadline,
        )
        self._apiserver_argv = components.apiserver_argv(binaries, self.layout, ports, pki)
        self._spawn("kube-apiserver", self._apiserver_argv)
        self._wait(
            "kube-apiserver /readyz", lambda: self.rest().get_text("/readyz") == "ok", deadline
        )
        self._start_controllers(binaries, pki, ports, deadline)
        self._register_node(deadline)
        self._wait(
            "ServiceAccount default/default",
            lambda: bool(self.rest().get("/api/v1/namespaces/default/serviceaccounts/default")),
            deadline,
        )

    def _start_controllers(
        self, binaries: Binaries, pki: Pki, ports: Ports, deadline: float
    ) -> None:
        self._spawn(
            "kube-controller-manager",
            components.controller_manager_argv(binaries, self.layout, ports, pki),
        )
        self._spawn("kube-scheduler", components.scheduler_argv(binaries, self.layout, ports))
        self._install_crds()
        self._wait("kwok Logs CRD", self._logs_crd_established, deadline)
        self._spawn(
            "kwok",
            components.kwok_argv(binaries, self.layout, ports, pki),
            env={"HOME": str(self.layout.kwok_home), "PATH": os.defpath},
        )
        self._spawn_log_binder()
        self._wait(
            "kube-controller-manager /healthz",
            lambda: _https_ok(ports.controller_manager),
            deadline,
        )
        self._wait("kube-scheduler /healthz", lambda: _https_ok(ports.scheduler), deadline)
        self._wait(
            "kwok /healthz",
            lambda: _http_ok(f"http://127.0.0.1:{ports.kwok}/healthz", "ok"),
            deadline,
        )
        self._wait("log binder", self.layout.binder_ready.exists, deadline)

    def _spawn_log_binder(self) -> None:
        argv = [
            sys.executable,
            "-m",
            f"{__package__}.logbinder",
            f"--kubeconfig={self.layout.kubeconfig}",
            f"--log-dir={self.layout.pod_log_dir / 'bound'}",
            f"--ready-file={self.layout.binder_ready}",
        ]
        python_path = os.pathsep.join(
            filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])
        )
        self._spawn(
            "logbinder", argv, env={**os.environ, "PYTHONPATH": python_path}, cwd=_PACKAGE_ROOT
        )

    def _register_node(self, deadline: float) -> None:
        name = self.settings.node_name
        self.rest().post("/api/v1/nodes", _node_manifest(name))
        self._wait(
            f"Node {name} Ready",
            lambda: _node_ready(self.rest().get(f"/api/v1/nodes/{name}")),
            deadline,
        )
        # The API server taints every new Node not-ready:NoSchedule; the node-lifecycle
        # controller would lift it, but it is left out (no evictions of the fake node when
        # a busy machine delays kwok's heartbeats), so lift it here, once.
        self.rest().patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})

    def _install_crds(self) -> None:
        """The kwok CRDs it watches but does not install (kwokctl would)."""
        import yaml  # PyYAML: a dependency of the kubernetes client

        for path in sorted(components.CRDS_DIR.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if crd:
                    self.rest().post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)

    def _logs_crd_established(self) -> bool:
        crd = self.rest().get(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/logs.kwok.x-k8s.io"
        )
        # A CRD just created has no status yet.
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    def _spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        popen, record = spawn(name, argv, self.layout.log_dir / f"{name}.log", env=env, cwd=cwd)
        self._popens.append(popen)
        self.records.append(record)

    def _wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        """Poll `check` until true; fail fast if a component died, or at the deadline."""
        last_error = ""
        while True:
            self._raise_if_any_died(what)
            try:
                if check():
                    self.timings[what] = round(time.monotonic() - self._began, 2)
                    return
            # Not ready yet: connection refused, 5xx/404 while starting, TLS not up yet.
            except (OSError, ApiError, ValueError, KeyError) as e:
                last_error = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out waiting for {what} ({last_error})\n{self.log_tails()}"
                )
            time.sleep(_POLL)

    def _raise_if_any_died(self, waiting_for: str) -> None:
        for record in self.records:
            if not is_running(record):
                raise ControlPlaneError(
                    f"{record.name} exited while waiting for {waiting_for}; its log:\n"
                    f"{tail(record.log_path, 60)}\n(work dir kept: {self.work_dir})"
                )

    def log_tails(self, lines: int = 25) -> str:
        """The end of every component log, for failure messages."""
        parts = [
            f"--- {r.name} ({r.log_path}) ---\n{tail(r.log_path, lines)}" for r in self.records
        ]
        return "\n".join(parts) + f"\n(work dir kept: {self.work_dir})"

    # -- state of a detached control plane (`up` / `down`) ----------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "work_dir": str(self.work_dir),
            "server": self.server,
            "startup_seconds": round(self.startup_seconds, 1),
            "processes": [r.to_json() for r in self.records],
        }

    @classmethod
    def from_state(cls, state_file: Path, *, stop_grace: float = 10.0) -> ControlPlane:
        """Re-attach to a control plane started (detached) by another process."""
        try:
            state = json.loads(state_file.read_text())
            work_dir = Path(state["work_dir"])
            records = [ProcessRecord.from_json(p) for p in state["processes"]]
        # Missing or corrupt state: the caller decides what to do (down cleans up anyway).
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StateError(f"cannot read control-plane state {state_file}: {e}") from e
        plane = cls(
            ControlPlaneSettings(
                work_dir=work_dir, keep_work_dir=True, detached=True, stop_grace=stop_grace
            )
        )
        plane.records = records
        plane.startup_seconds = float(state.get("startup_seconds", 0.0))
        return plane


def _node_manifest(name: str) -> dict[str, Any]:
    """A Node for kwok: no taints, so Job pods need no tolerations; room for 10,000 pods."""
    resources = {"cpu": "1000", "memory": "1Ti", "pods": "10000", "ephemeral-storage": "1Ti"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _http_ok(url: str, expected: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
    return expected in body.decode()


def _https_ok(port: int) -> bool:
    """GET /healthz of a component's self-signed secure port."""
    client = RestClient(Credentials(server=f"https://127.0.0.1:{port}", insecure=True), timeout=5)
    return client.get_text("/healthz") == "ok"
