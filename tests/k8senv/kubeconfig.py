"""Writing kubeconfig files, and reading the parts of one that the harness needs.

Files are written as JSON (valid YAML, so kubectl and every client read them) with the
certificates embedded, so a kubeconfig stays usable when copied elsewhere. Reading an
existing kubeconfig (K8SENV_KUBECONFIG) supports client certificates and tokens;
exec/auth-provider plugins are left to the real `kubernetes` client.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from .errors import K8sEnvError
from .rest import Credentials

CONTEXT = "jobferry-k8senv"


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, user: dict[str, str], name: str = CONTEXT
) -> Path:
    """Write a single-context kubeconfig; `user` is e.g. {"token": ...} or cert/key data."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)
    return path


def cert_user(cert: Path, key: Path) -> dict[str, str]:
    return {
        "client-certificate-data": _b64(cert.read_bytes()),
        "client-key-data": _b64(key.read_bytes()),
    }


def token_user(token: str) -> dict[str, str]:
    return {"token": token}


def load_credentials(path: Path, scratch_dir: Path) -> Credentials:
    """Credentials of the current context of kubeconfig `path`.

    Embedded certificate data is written to files in `scratch_dir` (the ssl module wants files).

    Raises:
        K8sEnvError: no current context, or an auth method this reader does not support.
    """
    config = _load(path)
    context = _named(config, "contexts", config.get("current-context"), path)["context"]
    cluster = _named(config, "clusters", context.get("cluster"), path)["cluster"]
    user = _named(config, "users", context.get("user"), path).get("user") or {}
    scratch_dir.mkdir(parents=True, exist_ok=True)
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    cert_file = _file_or_data(user, "client-certificate", scratch_dir / "client.crt", path)
    key_file = _file_or_data(user, "client-key", scratch_dir / "client.key", path)
    if not (token or (cert_file and key_file)):
        raise K8sEnvError(f"{path}: user of the current context has no token or client certificate")
    return Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=_file_or_data(cluster, "certificate-authority", scratch_dir / "ca.crt", path),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        cert_file=cert_file,
        key_file=key_file,
        token=token,
    )


def ca_pem_of(path: Path) -> bytes:
    """The CA bundle of the current context's cluster (for minting derived kubeconfigs)."""
    config = _load(path)
    context = _named(config, "contexts", config.get("current-context"), path)["context"]
    cluster = _named(config, "clusters", context.get("cluster"), path)["cluster"]
    if "certificate-authority-data" in cluster:
        return base64.b64decode(cluster["certificate-authority-data"])
    if "certificate-authority" in cluster:
        return _relative(path, cluster["certificate-authority"]).read_bytes()
    return b""


def server_of(path: Path) -> str:
    config = _load(path)
    context = _named(config, "contexts", config.get("current-context"), path)["context"]
    return str(
        _named(config, "clusters", context.get("cluster"), path)["cluster"]["server"]
    ).rstrip("/")


def _load(path: Path) -> dict[str, Any]:
    import yaml  # kubeconfigs in the wild are YAML; PyYAML comes with the kubernetes client

    try:
        loaded = yaml.safe_load(path.read_text())
    # Unreadable or not YAML: say which file.
    except (OSError, yaml.YAMLError) as e:
        raise K8sEnvError(f"cannot read kubeconfig {path}: {e}") from e
    if not isinstance(loaded, dict):
        raise K8sEnvError(f"{path} is not a kubeconfig")
    return loaded


def _named(config: dict[str, Any], section: str, name: object, path: Path) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if entry.get("name") == name:
            return dict(entry)
    raise K8sEnvError(
        f"{path}: no {section[:-1]} named {name!r} "
        f"(current-context {config.get('current-context')!r})"
    )


def _file_or_data(section: dict[str, Any], key: str, target: Path, kubeconfig: Path) -> Path | None:
    if f"{key}-data" in section:
        target.write_bytes(base64.b64decode(section[f"{key}-data"]))
        target.chmod(0o600)
        return target
    if key in section:
        return _relative(kubeconfig, section[key])
    return None


def _relative(kubeconfig: Path, name: str) -> Path:
    candidate = Path(name)
    return candidate if candidate.is_absolute() else kubeconfig.parent / candidate


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
