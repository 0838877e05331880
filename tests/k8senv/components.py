"""Command lines of the control-plane components, and the files they read.

Kept apart from the start/stop logic so the flags (the part that changes with Kubernetes
versions) can be read in one place. Everything listens on 127.0.0.1 on ports picked free
at start, so several control planes (a developer's `up` and a test run) can coexist.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from .binaries import Binaries
from .pki import Pki

STAGES_DIR = Path(__file__).resolve().parent / "stages"
CRDS_DIR = Path(__file__).resolve().parent / "crds"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.0.0.1/16"  # kwok hands out fake pod IPs from here; nothing is ever sent there
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_SELECTOR = f"{KWOK_NODE_ANNOTATION}=fake"

# The controllers that the tests rely on (Jobs, their TTL, ownership GC, pod GC, namespace
# deletion, ServiceAccounts and their tokens, kube-root-ca.crt) and nothing else, to stay
# light on 2 cores. Node lifecycle is left out: no taints or evictions of the kwok node.
CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "garbage-collector-controller",
    "pod-garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def pick(cls) -> Ports:
        """Six distinct free loopback ports (held open together so they differ)."""
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(6)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            ports = [s.getsockname()[1] for s in sockets]
        finally:
            for s in sockets:
                s.close()
        return cls(*ports)


@dataclass(frozen=True)
class Layout:
    """Files and directories of one control plane, all under `work_dir`."""

    work_dir: Path

    @property
    def pki_dir(self) -> Path:
        return self.work_dir / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.work_dir / "etcd"

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def pod_log_dir(self) -> Path:
        return self.work_dir / "pod-logs"

    @property
    def kubeconfig(self) -> Path:
        return self.work_dir / "admin.kubeconfig"

    @property
    def audit_policy(self) -> Path:
        return self.work_dir / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        return self.log_dir / "audit.log"

    @property
    def kubeconfig_dir(self) -> Path:
        return self.work_dir / "kubeconfigs"

    @property
    def kwok_config(self) -> Path:
        return self.work_dir / "kwok.yaml"

    @property
    def default_pod_log(self) -> Path:
        return self.pod_log_dir / "default.log"

    @property
    def binder_ready(self) -> Path:
        return self.work_dir / "logbinder.ready"

    @property
    def kwok_home(self) -> Path:
        """HOME for kwok, so a developer's ~/.kwok/kwok.yaml is never merged in."""
        return self.work_dir / "kwok-home"


def etcd_argv(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    client = f"http://127.0.0.1:{ports.etcd_client}"
    return [
        str(bins.etcd),
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--unsafe-no-fsync",  # throwaway data: trade durability for speed
        "--log-level=warn",
    ]


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


def write_audit_policy(layout: Layout) -> None:
    layout.audit_policy.write_text(AUDIT_POLICY)


def apiserver_argv(bins: Binaries, layout: Layout, ports: Ports, pki: Pki) -> list[str]:
    return [
        str(bins.kube_apiserver),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={layout.pki_dir}",
        f"--tls-cert-file={pki.apiserver.cert}",
        f"--tls-private-key-file={pki.apiserver.key}",
        f"--client-ca-file={pki.ca.cert}",
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        # pods/log goes to kwok's kubelet endpoint, whose cert our CA signed.
        f"--kubelet-client-certificate={pki.apiserver_kubelet_client.cert}",
        f"--kubelet-client-key={pki.apiserver_kubelet_client.key}",
        f"--kubelet-certificate-authority={pki.ca.cert}",
        "--kubelet-preferred-address-types=InternalIP",
        # Request-header (aggregation) auth: without it controller-manager and scheduler log
        # an error every few seconds about a missing requestheader CA.
        f"--requestheader-client-ca-file={pki.ca.cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.front_proxy_client.cert}",
        f"--proxy-client-key-file={pki.front_proxy_client.key}",
        # No kube-proxy or real endpoints: the `kubernetes` Service needs no loopback Endpoints.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        # Requests made by ServiceAccounts are audited, so a test can compare what a worker
        # actually did with what its Role grants.
        f"--audit-policy-file={layout.audit_policy}",
        f"--audit-log-path={layout.audit_log}",
        "--audit-log-format=json",
        "--audit-log-mode=blocking",
        # No rotation (the default rotates at 100 MB): the benchmark counts from an offset.
        "--audit-log-maxsize=100000",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(bins: Binaries, layout: Layout, ports: Ports, pki: Pki) -> list[str]:
    return [
        str(bins.kube_controller_manager),
        f"--kubeconfig={layout.kubeconfig}",
        f"--authentication-kubeconfig={layout.kubeconfig}",
        f"--authorization-kubeconfig={layout.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.controller_manager}",
        f"--cert-dir={layout.work_dir / 'controller-manager'}",
        "--leader-elect=false",
        # The default 20 requests/s holds 5,000 Jobs' pods back for many minutes (the
        # benchmark's N=5000); a real cluster's controllers are not the thing measured here.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca.cert}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(bins: Binaries, layout: Layout, ports: Ports) -> list[str]:
    return [
        str(bins.kube_scheduler),
        f"--kubeconfig={layout.kubeconfig}",
        f"--authentication-kubeconfig={layout.kubeconfig}",
        f"--authorization-kubeconfig={layout.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={ports.scheduler}",
        f"--cert-dir={layout.work_dir / 'scheduler'}",
        "--leader-elect=false",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--profiling=false",
        "--v=1",
    ]


def kwok_argv(bins: Binaries, layout: Layout, ports: Ports, pki: Pki) -> list[str]:
    return [
        str(bins.kwok),
        f"--config={layout.kwok_config}",
        f"--kubeconfig={layout.kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
        "--node-ip=127.0.0.1",
        f"--node-port={ports.kwok}",
        f"--server-address=127.0.0.1:{ports.kwok}",
        f"--tls-cert-file={pki.kubelet.cert}",
        f"--tls-private-key-file={pki.kubelet.key}",
        f"--cidr={POD_CIDR}",
        # Per-pod Logs objects come from the API (written by the log binder or a test);
        # the catch-all ClusterLogs stays in the static config.
        "--enable-crds=Logs",
        "--node-lease-duration-seconds=40",
    ]


def write_kwok_config(layout: Layout) -> Path:
    """kwok's config: the shipped stages plus a catch-all ClusterLogs for every pod."""
    documents = [p.read_text().strip() for p in sorted(STAGES_DIR.glob("*.yaml"))]
    documents.append(
        "apiVersion: kwok.x-k8s.io/v1alpha1\n"
        "kind: ClusterLogs\n"
        "metadata:\n  name: jobferry-default\n"
        "spec:\n  logs:\n"
        f"  - logsFile: {layout.default_pod_log}\n"
    )
    layout.kwok_config.write_text("\n---\n".join(documents) + "\n")
    return layout.kwok_config
