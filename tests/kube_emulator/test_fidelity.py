"""The emulator against the real control plane: same calls, same answers.

Each scenario runs through the official client against both the emulator and
``tests.k8senv``'s real kube-apiserver (with the real Job controller and garbage
collector) and must produce the same normalized outcome: HTTP status, Status body,
object shape. This is what keeps the emulator honest when the pinned Kubernetes version
moves. Known simplifications are left out on purpose: ``managedFields``, the wording of
label-selector parse errors, the Go value dump in "field is immutable", and the time the
garbage collector takes (the emulator is instant; here the real side is polled).
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from ..k8senv.cluster import Cluster
from . import DEFAULT_USER, KubeEmulator
from .test_emulator import job_manifest as job

pytestmark = pytest.mark.e2e
Outcome = Any
_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VOLUME = re.compile(r"kube-api-access-[a-z0-9]{5}")
_VOLATILE = ("managedFields", "resourceVersion", "creationTimestamp", "deletionTimestamp")


@dataclass
class Side:
    """One server under test, with a fresh namespace."""

    batch: client.BatchV1Api
    core: client.CoreV1Api
    namespace: str
    start_pod: Callable[[str], None]
    """Make the Job's pod exist (the real Job controller does it by itself)."""
    real: bool


def normalize(value: Any) -> Any:
    """Drop what differs by nature between two servers: uids, versions, times, suffixes."""
    if isinstance(value, dict):
        return {key: normalize(item) for key, item in value.items() if key not in _VOLATILE}
    if isinstance(value, list):
        return [normalize(item) for item in value]
    if isinstance(value, str):
        return _VOLUME.sub("kube-api-access-x", _UID.sub("<uid>", value))
    return value


def answer(call: Callable[[], Any]) -> Outcome:
    """The status and JSON body of a raw (``_preload_content=False``) call, error or not."""
    try:
        response = call()
    except ApiException as error:
        return {"status": error.status, "body": json.loads(error.body)}
    data = response.data
    body = json.loads(data) if data.startswith(b"{") else data.decode()
    return {"status": response.status, "body": body, "warning": response.headers.get("Warning")}


def wait_until(probe: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe() and time.monotonic() < deadline:
        time.sleep(0.2)


def job_pods(side: Side, name: str) -> list[client.V1Pod]:
    pods: list[client.V1Pod] = side.core.list_namespaced_pod(
        side.namespace, label_selector=f"job-name={name}"
    ).items
    return pods


def with_pod(side: Side, name: str) -> None:
    side.batch.create_namespaced_job(side.namespace, job(name))
    side.start_pod(name)
    wait_until(lambda: bool(job_pods(side, name)))


# -- scenarios ------------------------------------------------------------------------------


def created_job_shape(side: Side) -> Outcome:
    return answer(
        lambda: side.batch.create_namespaced_job(
            side.namespace, job("j", {"x": "y"}), _preload_content=False
        )
    )


def unlabelled_job_gets_template_labels(side: Side) -> Outcome:
    manifest = job("j")
    manifest["metadata"].pop("labels")
    manifest["spec"]["template"]["metadata"] = {"labels": {"app": "a"}}
    return side.batch.create_namespaced_job(side.namespace, manifest).metadata.labels


def duplicate_create(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("j"))
    return answer(
        lambda: side.batch.create_namespaced_job(side.namespace, job("j"), _preload_content=False)
    )


def read_missing(side: Side) -> Outcome:
    return answer(
        lambda: side.batch.read_namespaced_job("nope", side.namespace, _preload_content=False)
    )


def create_in_missing_namespace(side: Side) -> Outcome:
    return answer(
        lambda: side.batch.create_namespaced_job(
            "no-such-namespace", job("j"), _preload_content=False
        )
    )


def invalid(mutate: Callable[[dict[str, Any]], Any], name: str = "j") -> Callable[[Side], Outcome]:
    def scenario(side: Side) -> Outcome:
        manifest = job(name)
        mutate(manifest)
        return answer(
            lambda: side.batch.create_namespaced_job(
                side.namespace, manifest, _preload_content=False
            )
        )

    return scenario


def _pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def listing_shape(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("a", {"app": "j"}, suspend=True))
    side.batch.create_namespaced_job(side.namespace, job("b", {"app": "k"}, suspend=True))
    listed = answer(
        lambda: side.batch.list_namespaced_job(
            side.namespace, label_selector="app=j", _preload_content=False
        )
    )
    listed["body"]["items"] = [sorted(item) for item in listed["body"]["items"]]
    return listed


def unsupported_field_selector(side: Side) -> Outcome:
    return answer(
        lambda: side.batch.list_namespaced_job(
            side.namespace, field_selector="spec.x=1", _preload_content=False
        )
    )


def delete_without_policy(side: Side) -> Outcome:
    with_pod(side, "j")
    deleted = answer(
        lambda: side.batch.delete_namespaced_job("j", side.namespace, _preload_content=False)
    )
    wait_until(lambda: not side.batch.list_namespaced_job(side.namespace).items)
    wait_until(lambda: all(not pod.metadata.owner_references for pod in job_pods(side, "j")))
    owners = [pod.metadata.owner_references for pod in job_pods(side, "j")]
    return {
        "status": deleted["status"],
        "warning": deleted["warning"],
        "kind": deleted["body"]["kind"],
        "owners": owners,
    }


def delete_with(policy: str) -> Callable[[Side], Outcome]:
    def scenario(side: Side) -> Outcome:
        with_pod(side, "j")
        options = client.V1DeleteOptions(propagation_policy=policy)
        deleted = answer(
            lambda: side.batch.delete_namespaced_job(
                "j", side.namespace, body=options, _preload_content=False
            )
        )
        wait_until(lambda: not side.batch.list_namespaced_job(side.namespace).items)
        if policy == "Orphan":
            wait_until(
                lambda: all(not pod.metadata.owner_references for pod in job_pods(side, "j"))
            )
        else:
            wait_until(lambda: not job_pods(side, "j"))
        body = deleted["body"]
        summary = (
            body
            if body["kind"] == "Status"
            else {"kind": body["kind"], "metadata": body["metadata"]}
        )
        return {"status": deleted["status"], "body": summary, "pods": len(job_pods(side, "j"))}

    return scenario


def delete_body_beats_query(side: Side) -> Outcome:
    with_pod(side, "j")
    return answer(
        lambda: side.batch.delete_namespaced_job(
            "j",
            side.namespace,
            propagation_policy="Background",
            body=client.V1DeleteOptions(),
            _preload_content=False,
        )
    )["warning"]


def delete_bad_policy(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("j", suspend=True))
    return answer(
        lambda: side.batch.delete_namespaced_job(
            "j", side.namespace, propagation_policy="Sideways", _preload_content=False
        )
    )


def delete_uid_precondition(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("j", suspend=True))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="abc"))
    return answer(
        lambda: side.batch.delete_namespaced_job(
            "j", side.namespace, body=options, _preload_content=False
        )
    )


def status_subresource(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("j", suspend=True))
    by_status = side.batch.patch_namespaced_job_status(
        "j", side.namespace, {"status": {"active": 1}, "spec": {"parallelism": 9}}
    )
    by_main = side.batch.patch_namespaced_job(
        "j", side.namespace, {"metadata": {"labels": {"x": "y"}}, "status": {"active": 5}}
    )
    return [
        by_status.spec.parallelism,
        by_status.status.active,
        by_main.status.active,
        by_main.metadata.generation,
    ]


def conditions_merge_by_type(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("j", suspend=True))
    for kind in ("Suspended", "FailureTarget"):
        condition = {"type": kind, "status": "True", "reason": "R", "message": "m"}
        patched = side.batch.patch_namespaced_job_status(
            "j", side.namespace, {"status": {"conditions": [condition]}}
        )
    return sorted(condition.type for condition in patched.status.conditions)


def inapplicable_json_patch(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("j", suspend=True))
    patch = [{"op": "remove", "path": "/metadata/labels/nope"}]
    return answer(
        lambda: side.batch.patch_namespaced_job("j", side.namespace, patch, _preload_content=False)
    )


def patch_as_plain_json(side: Side) -> Outcome:
    side.batch.create_namespaced_job(side.namespace, job("j", suspend=True))
    return answer(
        lambda: side.batch.patch_namespaced_job(
            "j",
            side.namespace,
            {"metadata": {}},
            _content_type="application/json",
            _preload_content=False,
        )
    )


def replace_with_other_name(side: Side) -> Outcome:
    created = side.batch.create_namespaced_job(side.namespace, job("j", suspend=True))
    created.metadata.name = "other"
    return answer(
        lambda: side.batch.replace_namespaced_job(
            "j", side.namespace, created, _preload_content=False
        )
    )


def pod_create_and_delete(side: Side) -> Outcome:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    created = answer(
        lambda: side.core.create_namespaced_pod(side.namespace, pod, _preload_content=False)
    )
    deleted = answer(
        lambda: side.core.delete_namespaced_pod(
            "p", side.namespace, grace_period_seconds=0, _preload_content=False
        )
    )
    return {
        "created": created["status"],
        "spec": created["body"]["spec"],
        "status": created["body"]["status"],
        "deleted": deleted["status"],
    }


def log_of_missing_pod(side: Side) -> Outcome:
    return answer(
        lambda: side.core.read_namespaced_pod_log("nope", side.namespace, _preload_content=False)
    )


def log_without_container_name(side: Side) -> Outcome:
    containers = [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]
    side.core.create_namespaced_pod(
        side.namespace, {"metadata": {"name": "p"}, "spec": {"containers": containers}}
    )
    return [
        answer(
            lambda: side.core.read_namespaced_pod_log("p", side.namespace, _preload_content=False)
        ),
        answer(
            lambda: side.core.read_namespaced_pod_log(
                "p", side.namespace, container="z", _preload_content=False
            )
        ),
    ]


SCENARIOS: dict[str, Callable[[Side], Outcome]] = {
    "created job shape": created_job_shape,
    "unlabelled job gets template labels": unlabelled_job_gets_template_labels,
    "duplicate create": duplicate_create,
    "read missing": read_missing,
    "create in missing namespace": create_in_missing_namespace,
    "restartPolicy Always": invalid(lambda m: _pod_spec(m).update(restartPolicy="Always")),
    "restartPolicy unset": invalid(lambda m: _pod_spec(m).pop("restartPolicy")),
    "restartPolicy unknown": invalid(lambda m: _pod_spec(m).update(restartPolicy="Sometimes")),
    "name longer than a label": invalid(lambda m: None, name="a" * 70),
    "name not DNS-1123": invalid(lambda m: None, name="Bad_Name"),
    "no containers": invalid(lambda m: _pod_spec(m).update(containers=[])),
    "no image": invalid(lambda m: _pod_spec(m)["containers"][0].pop("image")),
    "negative backoffLimit": invalid(lambda m: m["spec"].update(backoffLimit=-1)),
    "no name": invalid(lambda m: m["metadata"].pop("name"), name=""),
    "two errors": invalid(
        lambda m: (
            _pod_spec(m).update(restartPolicy="Always"),
            _pod_spec(m)["containers"][0].pop("image"),
        )
    ),
    "resourceVersion on create": invalid(lambda m: m["metadata"].update(resourceVersion="5")),
    "namespace mismatch": invalid(lambda m: m["metadata"].update(namespace="elsewhere")),
    "listing shape": listing_shape,
    "unsupported field selector": unsupported_field_selector,
    "delete without policy": delete_without_policy,
    "delete Background": delete_with("Background"),
    "delete Foreground": delete_with("Foreground"),
    "delete Orphan": delete_with("Orphan"),
    "delete options body beats the query": delete_body_beats_query,
    "delete with an unknown policy": delete_bad_policy,
    "delete with a wrong uid precondition": delete_uid_precondition,
    "status subresource": status_subresource,
    "conditions merge by type": conditions_merge_by_type,
    "inapplicable JSON patch": inapplicable_json_patch,
    "patch as application/json": patch_as_plain_json,
    "replace with another name": replace_with_other_name,
    "pod create and delete": pod_create_and_delete,
    "log of a missing pod": log_of_missing_pod,
    "log without a container name": log_without_container_name,
}


# -- the two sides --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_api(k8s_control_plane: Cluster) -> Iterator[client.ApiClient]:
    api = k8s_control_plane.admin_api_client()
    yield api
    api.close()


@pytest.fixture
def emulator_api(kube_emulator: KubeEmulator, tmp_path: Any) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(
        config_file=str(kube_emulator.write_kubeconfig(tmp_path / "kubeconfig"))
    )
    yield api
    api.close()


def real_side(api: client.ApiClient) -> Side:
    namespace = f"fidelity-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    return Side(client.BatchV1Api(api), core, namespace, lambda _: None, real=True)


def emulated_side(api: client.ApiClient, emulator: KubeEmulator) -> Side:
    namespace = f"fidelity-{uuid.uuid4().hex[:8]}"
    emulator.add_namespace(namespace)

    def start_pod(job_name: str) -> None:
        emulator.add_pod_for_job(
            namespace, job_name, phase="Succeeded", container_state={"terminated": {"exitCode": 0}}
        )

    return Side(client.BatchV1Api(api), client.CoreV1Api(api), namespace, start_pod, real=False)


def comparable(outcome: Outcome, side: Side) -> Any:
    text = json.dumps(normalize(copy.deepcopy(outcome)), sort_keys=True, default=str)
    return json.loads(text.replace(side.namespace, "<namespace>"))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_answer_as_the_real_server(
    name: str,
    real_api: client.ApiClient,
    emulator_api: client.ApiClient,
    kube_emulator: KubeEmulator,
) -> None:
    real, emulated = real_side(real_api), emulated_side(emulator_api, kube_emulator)
    try:
        expected = comparable(SCENARIOS[name](real), real)
    finally:
        real.core.delete_namespace(real.namespace, propagation_policy="Background")
    assert comparable(SCENARIOS[name](emulated), emulated) == expected


def test_same_rbac_denials(
    k8s_control_plane: Cluster, kube_emulator: KubeEmulator, tmp_path: Any
) -> None:
    account = DEFAULT_USER.rsplit(":", 2)  # system:serviceaccount:NAMESPACE:NAME
    real_api = config.new_client_from_config(
        config_file=str(k8s_control_plane.sa_kubeconfig(account[1], account[2]))
    )
    kube_emulator.forbid("*", "*")
    fake_api = config.new_client_from_config(
        config_file=str(kube_emulator.write_kubeconfig(tmp_path / "kubeconfig"))
    )
    try:
        assert denials(fake_api) == denials(real_api)
    finally:
        real_api.close()
        fake_api.close()


def denials(api: client.ApiClient) -> list[Outcome]:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    calls: list[Callable[[], Any]] = [
        lambda: batch.create_namespaced_job("default", job("j"), _preload_content=False),
        lambda: batch.read_namespaced_job("j", "default", _preload_content=False),
        lambda: batch.list_namespaced_job("default", _preload_content=False),
        lambda: batch.list_job_for_all_namespaces(_preload_content=False),
        lambda: batch.patch_namespaced_job_status(
            "j", "default", {"status": {}}, _preload_content=False
        ),
        lambda: batch.delete_namespaced_job("j", "default", _preload_content=False),
        lambda: core.read_namespaced_pod_log("p", "default", _preload_content=False),
        lambda: batch.list_namespaced_job(
            "default", watch=True, timeout_seconds=1, _preload_content=False
        ),
    ]
    return [answer(call) for call in calls]
