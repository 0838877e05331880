"""Certificates and keys for a throwaway control plane, made with the `openssl` CLI.

A real API server insists on TLS, X.509 client auth is the simplest admin identity that
needs no extra flags, and ServiceAccount tokens need a signing key. `openssl` is on every
Debian machine, so no Python crypto package is needed. EC P-256 keys keep it fast.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ControlPlaneError

_DAYS = "3650"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every file the components are started with."""

    ca: KeyPair
    apiserver: KeyPair
    """Serving cert of kube-apiserver (127.0.0.1, localhost, kubernetes.default...)."""
    admin: KeyPair
    """Client cert in group system:masters: the admin kubeconfig and the components use it."""
    apiserver_kubelet_client: KeyPair
    """Client cert kube-apiserver presents to the kubelet (kwok) for pods/log."""
    kubelet: KeyPair
    """Serving cert of kwok's kubelet endpoint (127.0.0.1)."""
    front_proxy_client: KeyPair
    """Client cert of the aggregator (requestheader auth), so components find its CA."""
    service_account_key: Path
    """Private key that signs ServiceAccount tokens (kube-apiserver, kube-controller-manager)."""
    service_account_pub: Path
    """Its public key, for kube-apiserver to verify tokens."""


def create_pki(directory: Path, *, node_name: str) -> Pki:
    """Generate a CA and every certificate the control plane needs into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _self_signed_ca(directory, "ca", "jobferry-k8senv-ca")
    apiserver_names = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "10.96.0.1",
    ]
    sa_key, sa_pub = _service_account_keys(directory)
    return Pki(
        ca=ca,
        apiserver=_issue(directory, ca, "apiserver", "kube-apiserver", [], apiserver_names),
        admin=_issue(directory, ca, "admin", "jobferry-k8senv-admin", ["system:masters"], []),
        apiserver_kubelet_client=_issue(
            directory,
            ca,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            ["system:masters"],
            [],
        ),
        kubelet=_issue(
            directory,
            ca,
            "kubelet",
            f"system:node:{node_name}",
            ["system:nodes"],
            ["127.0.0.1", "localhost", node_name],
        ),
        front_proxy_client=_issue(
            directory, ca, "front-proxy-client", "front-proxy-client", [], []
        ),
        service_account_key=sa_key,
        service_account_pub=sa_pub,
    )


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _self_signed_ca(directory: Path, name: str, common_name: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(pair.key), "-out", str(pair.cert), "-days", _DAYS,
        "-subj", f"/CN={common_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )  # fmt: skip
    return pair


def _issue(
    directory: Path,
    ca: KeyPair,
    name: str,
    common_name: str,
    organizations: list[str],
    alt_names: list[str],
) -> KeyPair:
    """A leaf cert signed by `ca`, usable both as server and client certificate."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    subject = "".join(f"/O={o}" for o in organizations) + f"/CN={common_name}"
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(pair.key), "-out", str(csr), "-subj", subject,
    )  # fmt: skip
    extensions = directory / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth,clientAuth",
    ]
    if alt_names:
        lines.append("subjectAltName=" + ",".join(_alt_name(n) for n in alt_names))
    extensions.write_text("\n".join(lines) + "\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial",
        "-days", _DAYS, "-sha256", "-extfile", str(extensions), "-out", str(pair.cert),
    )  # fmt: skip
    csr.unlink()
    extensions.unlink()
    return pair


def _alt_name(name: str) -> str:
    try:
        ipaddress.ip_address(name)
    # Not an IP literal: a DNS name.
    except ValueError:
        return f"DNS:{name}"
    return f"IP:{name}"


def _service_account_keys(directory: Path) -> tuple[Path, Path]:
    key, pub = directory / "sa.key", directory / "sa.pub"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl("ec", "-in", str(key), "-pubout", "-out", str(pub))
    return key, pub
