"""Container logs for kwok pods, served through the real `pods/log` API.

kube-apiserver proxies `pods/log` to the kubelet endpoint of the pod's node; for a kwok
node that is kwok's own server, which answers from a file named by a kwok `Logs` object
(per pod, by name) or a `ClusterLogs` entry (by namespace/pod name). kwok reads those files
with the CRI log reader, so they must be in CRI format: `<RFC3339Nano> stdout F <line>`.

This module writes such files and the `Logs` objects that point at them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ApiError
from .rest import RestClient

LOGS_API = "/apis/kwok.x-k8s.io/v1alpha1"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
BINDER_NAME = "jobferry-k8senv-logbinder"
DEFAULT_LOG_TEXT = "jobferry-k8senv: simulated container output\n"


def write_cri_log(path: Path, text: str, *, stream: str = "stdout") -> Path:
    """Write `text` as a CRI log file (one entry per line, all stamped now)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = text.splitlines() or [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{stamp} {stream} F {line}\n" for line in lines))
    return path


def logs_object(
    namespace: str,
    pod: str,
    logs_file: Path,
    *,
    container: str | None = None,
    owner_uid: str | None = None,
    managed_by: str | None = None,
) -> dict[str, Any]:
    """A kwok `Logs` object serving `logs_file` for one container (or all) of one pod."""
    entry: dict[str, Any] = {"logsFile": str(logs_file)}
    if container:
        entry["containers"] = [container]
    metadata: dict[str, Any] = {"name": pod, "namespace": namespace}
    if owner_uid:
        # Garbage-collected with its pod.
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": owner_uid}
        ]
    if managed_by:
        metadata["labels"] = {MANAGED_BY_LABEL: managed_by}
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Logs",
        "metadata": metadata,
        "spec": {"logs": [entry]},
    }


def apply_logs(client: RestClient, obj: dict[str, Any]) -> None:
    """Create the `Logs` object, or replace the spec of an existing one with that name."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    collection = f"{LOGS_API}/namespaces/{namespace}/logs"
    try:
        client.post(collection, obj)
    # Already there (pod recreated under the same name, or set twice): update it instead.
    except ApiError as e:
        if e.status != 409:
            raise
        client.patch(
            f"{collection}/{name}",
            {
                "metadata": {"ownerReferences": obj["metadata"].get("ownerReferences")},
                "spec": obj["spec"],
            },
        )
