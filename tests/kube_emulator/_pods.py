"""Pods as worker code sees them: created by the (absent) Job controller, read, logged.

Two things kmock gets wrong here: ``GET pods/NAME/log`` returns the pod's JSON instead of
its log text, and nothing ties pods to their Job. The emulator builds Job pods the way the
Job controller does (template labels, ``ownerReferences`` to the Job), keeps log text per
pod, and answers log reads like the real server: plain text, ``tailLines`` and
``limitBytes`` honoured, 400 for a container that has not started yet or is not named when
the pod has several. ``follow`` returns what is there and ends (no live stream);
``timestamps`` and ``previous`` are not emulated.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from typing import Any

from . import _jobs, _objects, _status
from ._resources import PODS

JsonDict = dict[str, Any]
EMULATED_NODE = "emulator-node"
_STATES = ("waiting", "running", "terminated")


def container_names(pod: JsonDict) -> list[str]:
    containers = pod.get("spec", {}).get("containers") or []
    return [str(c.get("name")) for c in containers if isinstance(c, Mapping)]


def _validate(pod: JsonDict) -> None:
    causes: list[_status.Cause] = []
    containers = pod.get("spec", {}).get("containers")
    if not containers:
        causes.append(_status.Cause("FieldValueRequired", "Required value", "spec.containers"))
    for index, container in enumerate(containers or []):
        for key in ("name", "image"):
            if not isinstance(container, Mapping) or not container.get(key):
                path = f"spec.containers[{index}].{key}"
                causes.append(_status.Cause("FieldValueRequired", "Required value", path))
    if causes:
        raise _status.invalid(PODS.group, PODS.kind, pod["metadata"]["name"], causes)


def _api_access_volume(name: str) -> JsonDict:
    """The projected service account token volume that admission mounts into every pod."""
    namespace_item = {
        "path": "namespace",
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
    }
    sources = [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [namespace_item]}},
    ]
    return {"name": name, "projected": {"defaultMode": 420, "sources": sources}}


def admit(spec: JsonDict) -> None:
    """What defaulting and the ServiceAccount admission plugin add to every pod's spec."""
    spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    tolerations = [
        {
            "key": f"node.kubernetes.io/{taint}",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
        for taint in ("not-ready", "unreachable")
    ]
    spec.setdefault("tolerations", tolerations)
    volume = f"kube-api-access-{_objects.random_suffix()}"
    spec.setdefault("volumes", []).append(_api_access_volume(volume))
    mount = {
        "name": volume,
        "readOnly": True,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    }
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            container.setdefault("volumeMounts", []).append(dict(mount))


def prepare_create(pod: JsonDict) -> JsonDict:
    """Default, validate and admit a Pod whose metadata ``_objects.prepare_create`` filled.

    A pod created through the API is Pending with no node, as before the scheduler sees it.
    """
    pod = copy.deepcopy(pod)
    _jobs.default_pod_spec(pod.setdefault("spec", {}))
    _validate(pod)
    admit(pod["spec"])
    pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    return pod


def complete_state(state: Mapping[str, Any]) -> JsonDict:
    """Fill what the kubelet always reports in a container state (times, reason).

    Raises:
        ValueError: the state is not exactly one of waiting/running/terminated, or a
            terminated state has no exitCode (the official client cannot even parse that).
    """
    keys = [key for key in _STATES if key in state]
    if len(keys) != 1 or len(state) != 1:
        raise ValueError(f"container_state needs exactly one of {_STATES}, got {sorted(state)}")
    key = keys[0]
    detail = dict(state[key] or {})
    stamp = _objects.now()
    if key == "running":
        detail.setdefault("startedAt", stamp)
    elif key == "terminated":
        if not isinstance(detail.get("exitCode"), int):
            raise ValueError("a terminated container_state needs an integer exitCode")
        detail.setdefault("reason", "Completed" if detail["exitCode"] == 0 else "Error")
        detail.setdefault("startedAt", stamp)
        detail.setdefault("finishedAt", stamp)
    else:
        detail.setdefault("reason", "ContainerCreating")
    return {key: detail}


def container_status(container: Mapping[str, Any], state: JsonDict) -> JsonDict:
    """A containerStatuses entry with every field the official client requires."""
    started = "running" in state or "terminated" in state
    image = str(container.get("image", ""))
    status: JsonDict = {
        "name": container.get("name"),
        "image": image,
        "imageID": f"{image}@sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}" if started else "",
        "ready": "running" in state,
        "started": "running" in state,
        "restartCount": 0,
        "state": copy.deepcopy(state),
        "lastState": {},
    }
    if started:
        status["containerID"] = f"containerd://{uuid.uuid4().hex}"
    return status


def _conditions(phase: str, state: JsonDict) -> list[JsonDict]:
    stamp = _objects.now()
    ready = "True" if phase == "Running" and "running" in state else "False"
    return [
        {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": stamp}
        for kind, value in (
            ("PodScheduled", "True"),
            ("Initialized", "True"),
            ("ContainersReady", ready),
            ("Ready", ready),
        )
    ]


def for_job(job: JsonDict, name: str, phase: str, state: JsonDict) -> JsonDict:
    """A pod as the Job controller creates it and the kubelet reports it."""
    template = job["spec"]["template"]
    meta: JsonDict = {
        "name": name,
        "generateName": f"{job['metadata']['name']}-",
        "namespace": job["metadata"]["namespace"],
        "labels": copy.deepcopy(template.get("metadata", {}).get("labels") or {}),
        "ownerReferences": [_jobs.owner_reference(job)],
        "uid": str(uuid.uuid4()),
        "creationTimestamp": _objects.now(),
        "generation": 1,
    }
    if template.get("metadata", {}).get("annotations"):
        meta["annotations"] = copy.deepcopy(template["metadata"]["annotations"])
    spec = copy.deepcopy(template["spec"])
    admit(spec)
    spec["nodeName"] = EMULATED_NODE
    containers = spec.get("containers") or []
    status = {
        "phase": phase,
        "conditions": _conditions(phase, state),
        "hostIP": "10.0.0.2",
        "podIP": "10.244.0.2",
        "startTime": meta["creationTimestamp"],
        "qosClass": "BestEffort",
        "containerStatuses": [container_status(container, state) for container in containers],
    }
    return {
        "apiVersion": PODS.api_version,
        "kind": PODS.kind,
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def _pick_container(pod: JsonDict, wanted: str | None) -> str:
    names = container_names(pod)
    pod_name = pod["metadata"]["name"]
    if wanted:
        if wanted not in names:
            raise _status.bad_request(f"container {wanted} is not valid for pod {pod_name}")
        return wanted
    if len(names) != 1:
        choices = " ".join(names)
        raise _status.bad_request(
            f"a container name must be specified for pod {pod_name}, choose one of: [{choices}]"
        )
    return names[0]


def _check_started(pod: JsonDict, container: str) -> None:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    state = next((s.get("state") or {} for s in statuses if s.get("name") == container), None)
    if state is None or "waiting" in state:
        reason = (state or {}).get("waiting", {}).get("reason") or "ContainerCreating"
        pod_name = pod["metadata"]["name"]
        raise _status.bad_request(
            f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}'
        )


def _tail(text: str, tail_lines: int | None, limit_bytes: int | None) -> str:
    if tail_lines is not None:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-tail_lines:]) if tail_lines > 0 else ""
    if limit_bytes is not None:
        text = text.encode()[:limit_bytes].decode(errors="ignore")
    return text


def _int_param(query: Mapping[str, str], key: str) -> int | None:
    if key not in query:
        return None
    try:
        return int(query[key])
    except ValueError:
        raise _status.bad_request(f'invalid value for {key}: "{query[key]}"') from None


def read_log(pod: JsonDict, logs: Mapping[str | None, str], query: Mapping[str, str]) -> str:
    """The log text the real server would return for ``GET pods/NAME/log?...``.

    ``logs`` maps a container name (or None for "any container") to its full text.
    A container with log text set counts as started even if its state says otherwise.
    """
    container = _pick_container(pod, query.get("container"))
    text = logs.get(container, logs.get(None))
    if text is None:
        _check_started(pod, container)
        text = ""
    return _tail(text, _int_param(query, "tailLines"), _int_param(query, "limitBytes"))
