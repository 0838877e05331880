"""Build the batch/v1 Job manifest for a workflow request, as plain API-shaped JSON.

Pure functions, no client: the manifest is unit-tested as data, and the Kubernetes backend
sends it as is. Labels follow the guide jobferry grew from (`app`, `workflow-id`), so
`kubectl get jobs -l app=jobferry` lists every workflow's Job.
"""

from __future__ import annotations

from typing import Any

from scheduler.models import EnvVar, Toleration, WorkflowRequest

CONTAINER_NAME = "workflow"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "jobferry"
WORKFLOW_LABEL = "workflow-id"


def job_labels(request: WorkflowRequest, app_label: str) -> dict[str, str]:
    """The labels that mark a Job as this workflow's: user labels plus jobferry's own."""
    return {
        **request.labels,
        "app": app_label,
        WORKFLOW_LABEL: request.workflow_id,
        MANAGED_BY: MANAGER,
    }


def owned_selector(app_label: str) -> str:
    """The label selector of every Job (and pod) this jobferry installation created."""
    return f"app={app_label},{MANAGED_BY}={MANAGER}"


def build_job(
    request: WorkflowRequest,
    job_name: str,
    app_label: str,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Job manifest. `extra_env` adds literal variables (e.g. TRACEPARENT) to the container."""
    labels = job_labels(request, app_label)
    metadata: dict[str, Any] = {"name": job_name, "namespace": request.namespace, "labels": labels}
    if request.annotations:
        metadata["annotations"] = dict(request.annotations)
    spec: dict[str, Any] = {
        "backoffLimit": request.backoff_limit,
        "template": {
            "metadata": _pod_metadata(request, labels),
            "spec": _pod_spec(request, extra_env),
        },
    }
    if request.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = request.ttl_seconds_after_finished
    if request.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = request.active_deadline_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


def _pod_metadata(request: WorkflowRequest, labels: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"labels": dict(labels)}
    if request.annotations:
        metadata["annotations"] = dict(request.annotations)
    return metadata


def _pod_spec(request: WorkflowRequest, extra_env: dict[str, str] | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": request.image,
        "command": list(request.command),
    }
    if request.args:
        container["args"] = list(request.args)
    env = [_env_var(var) for var in request.env]
    env += [{"name": name, "value": value} for name, value in (extra_env or {}).items()]
    if env:
        container["env"] = env
    resources = _resources(request)
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if request.service_account:
        spec["serviceAccountName"] = request.service_account
    if request.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in request.image_pull_secrets]
    if request.node_selector:
        spec["nodeSelector"] = dict(request.node_selector)
    if request.tolerations:
        spec["tolerations"] = [_toleration(t) for t in request.tolerations]
    return spec


def _resources(request: WorkflowRequest) -> dict[str, dict[str, str]]:
    resources: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        suffix = kind.rstrip("s")
        values = {
            name: value
            for name in ("cpu", "memory")
            if (value := getattr(request, f"{name}_{suffix}")) is not None
        }
        if values:
            resources[kind] = values
    return resources


def _env_var(var: EnvVar) -> dict[str, Any]:
    if var.secret_key_ref is not None:
        ref = var.secret_key_ref
        source = {"secretKeyRef": {"name": ref.name, "key": ref.key, "optional": ref.optional}}
        return {"name": var.name, "valueFrom": source}
    if var.config_map_key_ref is not None:
        ref_cm = var.config_map_key_ref
        source = {
            "configMapKeyRef": {"name": ref_cm.name, "key": ref_cm.key, "optional": ref_cm.optional}
        }
        return {"name": var.name, "valueFrom": source}
    return {"name": var.name, "value": var.value}


def _toleration(toleration: Toleration) -> dict[str, Any]:
    fields = {
        "key": toleration.key,
        "operator": toleration.operator,
        "value": toleration.value,
        "effect": toleration.effect,
        "tolerationSeconds": toleration.toleration_seconds,
    }
    return {key: value for key, value in fields.items() if value is not None}
