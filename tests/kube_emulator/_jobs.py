"""Job semantics of the real server that worker code can observe, minus the controller.

On create the real server defaults the spec (completions, parallelism, backoffLimit, ...),
copies the template labels to an unlabelled Job, labels the pod template with
``job-name``/``controller-uid`` (both plain and ``batch.kubernetes.io/`` prefixed) and sets
the selector to the uid; it rejects an invalid Job with 422. kmock does none of that. The
Job controller (pods, status) is not emulated: tests create pods with
``KubeEmulator.add_pod_for_job`` and move status with ``set_job_status`` and friends.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from . import _objects, _status
from ._resources import JOBS

JsonDict = dict[str, Any]
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
CONTROLLER_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
_MAX_LABEL_VALUE = 63
_IMMUTABLE_FIELDS = (("selector",), ("completionMode",), ("template", "spec"))


def _default_container(container: JsonDict) -> None:
    image = str(container.get("image", ""))
    tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
    pull = "Always" if tagless or image.endswith(":latest") else "IfNotPresent"
    container.setdefault("imagePullPolicy", pull)
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")


def default_pod_spec(spec: JsonDict) -> None:
    """SetDefaults_PodSpec and SetDefaults_Container, the fields a reader might look at."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            _default_container(container)


def apply_defaults(job: JsonDict) -> None:
    """SetDefaults_Job: runs before validation, so restartPolicy defaults to Always first."""
    spec = job.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    per_index = spec.get("backoffLimitPerIndex") is not None
    spec.setdefault("backoffLimit", 2147483647 if per_index else 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("manualSelector", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))


def generate_selector(job: JsonDict) -> None:
    """The labels the Job controller finds its pods by, and the selector on the uid."""
    meta = job["metadata"]
    spec = job["spec"]
    if not spec.get("manualSelector"):
        labels = spec["template"]["metadata"].setdefault("labels", {})
        for key in CONTROLLER_UID_LABELS:
            labels[key] = meta["uid"]
        for key in JOB_NAME_LABELS:
            labels[key] = meta["name"]
        spec["selector"] = {"matchLabels": {CONTROLLER_UID_LABELS[0]: meta["uid"]}}


def copy_template_labels(job: JsonDict) -> None:
    """An unlabelled Job gets its final template labels, generated ones included.

    A 1.37 server does this after validation: a too-long name is reported once, for
    ``spec.template.labels``, not for the Job's own labels.
    """
    template_labels = job["spec"]["template"]["metadata"].get("labels")
    if template_labels and not job["metadata"].get("labels"):
        job["metadata"]["labels"] = dict(template_labels)


def _container_causes(containers: Any) -> list[_status.Cause]:
    path = "spec.template.spec.containers"
    if not containers:
        return [_status.Cause("FieldValueRequired", "Required value", path)]
    causes: list[_status.Cause] = []
    for index, container in enumerate(containers):
        for key in ("name", "image"):
            if not isinstance(container, Mapping) or not container.get(key):
                causes.append(
                    _status.Cause("FieldValueRequired", "Required value", f"{path}[{index}].{key}")
                )
    return causes


def _label_causes(job: JsonDict) -> list[_status.Cause]:
    causes: list[_status.Cause] = []
    for path, labels in (
        ("metadata.labels", job["metadata"].get("labels") or {}),
        ("spec.template.labels", job["spec"]["template"]["metadata"].get("labels") or {}),
    ):
        too_long = sorted({str(v) for v in labels.values() if len(str(v)) > _MAX_LABEL_VALUE})
        limit = f"must be no more than {_MAX_LABEL_VALUE} bytes"
        causes += [
            _status.Cause("FieldValueInvalid", f"Invalid value: {_objects.quote(v)}: {limit}", path)
            for v in too_long
        ]
    return causes


def _count_causes(spec: JsonDict) -> list[_status.Cause]:
    causes: list[_status.Cause] = []
    for key in (
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        value = spec.get(key)
        if isinstance(value, int) and value < 0:
            causes.append(
                _status.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {value}: must be greater than or equal to 0",
                    f"spec.{key}",
                )
            )
    return causes


def _restart_policy_causes(spec: JsonDict) -> list[_status.Cause]:
    policy = spec["template"]["spec"].get("restartPolicy", "")
    path = "spec.template.spec.restartPolicy"
    if policy in ("Always", ""):
        return [
            _status.Cause(
                "FieldValueRequired", 'Required value: valid values: "OnFailure", "Never"', path
            )
        ]
    if policy not in ("OnFailure", "Never"):
        # The pod template's own validation speaks first, then the Job's.
        value = _objects.quote(policy)
        return [
            _status.Cause(
                "FieldValueNotSupported",
                f'Unsupported value: {value}: supported values: "Always", "OnFailure", "Never"',
                path,
            ),
            _status.Cause(
                "FieldValueNotSupported",
                f'Unsupported value: {value}: supported values: "OnFailure", "Never"',
                path,
            ),
        ]
    return []


def validate(job: JsonDict) -> None:
    """Reject a Job the real server would reject (a useful subset of ValidateJob).

    Raises:
        ApiError: 422 Invalid, with one cause per problem.
    """
    spec = job["spec"]
    causes = (
        _label_causes(job)
        + _count_causes(spec)
        + _container_causes(spec["template"]["spec"].get("containers"))
        + _restart_policy_causes(spec)
    )
    if causes:
        raise _status.invalid(JOBS.group, JOBS.kind, job["metadata"]["name"], causes)


def prepare_create(job: JsonDict) -> JsonDict:
    """Default, label and validate a Job whose metadata ``_objects.prepare_create`` filled."""
    job = copy.deepcopy(job)
    apply_defaults(job)
    generate_selector(job)
    validate(job)
    copy_template_labels(job)
    job["status"] = {}
    return job


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def check_update(current: JsonDict, updated: JsonDict) -> None:
    """A Job's selector and pod spec are immutable once created.

    The field paths are the real server's; its value dump is a Go struct, so the emulator
    prints JSON instead.
    """
    causes = [
        _status.Cause(
            "FieldValueInvalid",
            f"Invalid value: {json.dumps(value, sort_keys=True)}: field is immutable",
            "spec." + ".".join(path),
        )
        for path in _IMMUTABLE_FIELDS
        if (value := _dig(updated.get("spec"), path)) != _dig(current["spec"], path)
    ]
    if causes:
        raise _status.invalid(JOBS.group, JOBS.kind, current["metadata"]["name"], causes)


def owns(job: JsonDict, pod: JsonDict) -> bool:
    """Whether deleting the Job takes the pod with it.

    The real garbage collector follows ownerReferences only. A pod with none is also taken
    when its ``job-name`` label names the Job (a convenience for hand-made pods), unless
    its ``controller-uid`` label names another Job (a pod orphaned by an earlier Job of
    the same name survives, as it would on a real cluster).
    """
    meta = pod["metadata"]
    uid = job["metadata"]["uid"]
    references = meta.get("ownerReferences") or []
    if references:
        return any(reference.get("uid") == uid for reference in references)
    labels = meta.get("labels") or {}
    named = any(labels.get(key) == job["metadata"]["name"] for key in JOB_NAME_LABELS)
    return named and all(labels.get(key, uid) == uid for key in CONTROLLER_UID_LABELS)


def owner_reference(job: JsonDict) -> JsonDict:
    return {
        "apiVersion": JOBS.api_version,
        "kind": JOBS.kind,
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def succeeded_status(job: JsonDict) -> JsonDict:
    """The status the Job controller writes when the Job completes (Kubernetes 1.31+)."""
    stamp = _objects.now()
    completions = job["spec"].get("completions") or 1
    return {
        "conditions": [
            _condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                stamp,
            ),
            _condition(
                "Complete", "CompletionsReached", "Reached expected number of succeeded pods", stamp
            ),
        ],
        "startTime": job["metadata"]["creationTimestamp"],
        "completionTime": stamp,
        "succeeded": completions,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }


def failed_status(job: JsonDict, reason: str, message: str) -> JsonDict:
    """The status the Job controller writes when the Job fails (Kubernetes 1.31+)."""
    stamp = _objects.now()
    return {
        "conditions": [
            _condition("FailureTarget", reason, message, stamp),
            _condition("Failed", reason, message, stamp),
        ],
        "startTime": job["metadata"]["creationTimestamp"],
        "failed": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }


def _condition(kind: str, reason: str, message: str, stamp: str) -> JsonDict:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
    }
