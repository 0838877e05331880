"""Checks that the test control plane behaves like a cluster: the kwok stages, the real Job
controller's reactions to them, pods/log, TTL, deletion and RBAC.

Everything goes through the real `kubernetes` client, as product code will.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes.config
import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.services import wait_for

from .behaviours import Behaviour, pod_metadata
from .cluster import Cluster
from .logs import DEFAULT_LOG_TEXT, write_cri_log

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def api(k8s_control_plane: Cluster) -> Iterator[Any]:
    client = k8s_control_plane.admin_api_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def core(api: Any) -> Any:
    return k8s.CoreV1Api(api)


@pytest.fixture
def batch(api: Any) -> Any:
    return k8s.BatchV1Api(api)


@pytest.fixture
def namespace(core: Any) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods need it)."""
    name = f"k8senv-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_for(
        "default ServiceAccount",
        lambda: _exists(lambda: core.read_namespaced_service_account("default", name)),
    )
    yield name
    core.delete_namespace(name)


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
    # 404 is the "not (yet / any more)" answer these waits poll for.
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def job_manifest(
    name: str,
    behaviour: Behaviour | None = None,
    *,
    backoff_limit: int = 0,
    parallelism: int = 1,
    spec: dict[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "parallelism": parallelism,
            "template": {
                "metadata": pod_metadata(behaviour, **params),
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "example.invalid/workflow:1"}],
                },
            },
            **(spec or {}),
        },
    }


def job_condition(batch: Any, namespace: str, name: str, condition: str) -> Any:
    """The Job's condition of that type if it is True, else None."""
    job = batch.read_namespaced_job(name, namespace)
    for c in job.status.conditions or []:
        if c.type == condition and c.status == "True":
            return c
    return None


def job_pods(core: Any, namespace: str, job: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def read_log(core: Any, pod: str, namespace: str, **options: Any) -> str:
    """pods/log as text.

    kubernetes==36 returns the repr of the bytes ("b'...'") from read_namespaced_pod_log
    (kubernetes-client/python#2596), so read the raw response instead.
    """
    response = core.read_namespaced_pod_log(pod, namespace, _preload_content=False, **options)
    try:
        return bytes(response.data).decode()
    finally:
        response.release_conn()


def terminated(pod: Any) -> Any:
    return pod.status.container_statuses[0].state.terminated


def test_job_without_behaviour_succeeds(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("plain"))

    wait_for("Complete", lambda: job_condition(batch, namespace, "plain", "Complete"))
    (pod,) = job_pods(core, namespace, "plain")
    assert pod.status.phase == "Succeeded"
    assert terminated(pod).exit_code == 0
    assert terminated(pod).reason == "Completed"


def test_succeed_runs_for_its_duration(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("slow", Behaviour.SUCCEED, duration="3s"))

    running = wait_for(
        "pod Running",
        lambda: [p for p in job_pods(core, namespace, "slow") if p.status.phase == "Running"],
    )
    assert running[0].status.container_statuses[0].state.running is not None
    wait_for("Complete", lambda: job_condition(batch, namespace, "slow", "Complete"))
    job = batch.read_namespaced_job("slow", namespace)
    assert _seconds(job.status.start_time, job.status.completion_time) >= 2


def test_fail_is_retried_until_backoff_limit(core: Any, batch: Any, namespace: str) -> None:
    """backoffLimit=1: the real Job controller runs 2 pods (~10s backoff between), then gives up."""
    batch.create_namespaced_job(
        namespace,
        job_manifest("failing", Behaviour.FAIL, backoff_limit=1, exit_code=3, message="boom"),
    )

    failed = wait_for(
        "Failed", lambda: job_condition(batch, namespace, "failing", "Failed"), timeout=60
    )
    assert failed.reason == "BackoffLimitExceeded"
    assert batch.read_namespaced_job("failing", namespace).status.failed == 2
    pods = job_pods(core, namespace, "failing")
    assert [p.status.phase for p in pods] == ["Failed", "Failed"]
    assert {
        (terminated(p).exit_code, terminated(p).reason, terminated(p).message) for p in pods
    } == {(3, "Error", "boom")}


def test_oom_is_killed_with_137(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("hungry", Behaviour.OOM, duration="500ms"))

    wait_for("Failed", lambda: job_condition(batch, namespace, "hungry", "Failed"))
    (pod,) = job_pods(core, namespace, "hungry")
    assert pod.status.phase == "Failed"
    assert (terminated(pod).exit_code, terminated(pod).reason) == (137, "OOMKilled")


def test_imagepull_stays_pending(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("noimage", Behaviour.IMAGEPULL))

    def backing_off() -> Any:
        pods = job_pods(core, namespace, "noimage")
        statuses = pods[0].status.container_statuses if pods else None
        return (
            statuses
            and statuses[0].state.waiting
            and statuses[0].state.waiting.reason == "ImagePullBackOff"
        )

    wait_for("ImagePullBackOff", backing_off)
    time.sleep(1.0)
    (pod,) = job_pods(core, namespace, "noimage")
    assert pod.status.phase == "Pending"
    assert "example.invalid/workflow:1" in pod.status.container_statuses[0].state.waiting.message
    assert batch.read_namespaced_job("noimage", namespace).status.active == 1


def test_slow_start_is_pending_then_succeeds(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(
        namespace, job_manifest("late", Behaviour.SLOW_START, start_delay="2s")
    )

    def creating() -> Any:
        pods = job_pods(core, namespace, "late")
        statuses = pods[0].status.container_statuses if pods else None
        return (
            statuses
            and statuses[0].state.waiting
            and statuses[0].state.waiting.reason == "ContainerCreating"
        )

    wait_for("ContainerCreating", creating)
    began = time.monotonic()
    wait_for("Complete", lambda: job_condition(batch, namespace, "late", "Complete"))
    assert time.monotonic() - began >= 1.5


def test_active_deadline_stops_run_forever(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(
        namespace, job_manifest("endless", Behaviour.RUN_FOREVER, spec={"activeDeadlineSeconds": 2})
    )

    failed = wait_for(
        "Failed", lambda: job_condition(batch, namespace, "endless", "Failed"), timeout=30
    )
    assert failed.reason == "DeadlineExceeded"
    wait_for("pods removed", lambda: not job_pods(core, namespace, "endless"))


def test_ttl_after_finished_deletes_job(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(
        namespace, job_manifest("shortlived", spec={"ttlSecondsAfterFinished": 2})
    )

    wait_for("Complete", lambda: job_condition(batch, namespace, "shortlived", "Complete"))
    wait_for(
        "Job deleted by TTL",
        lambda: not _exists(lambda: batch.read_namespaced_job("shortlived", namespace)),
        timeout=30,
    )
    wait_for(
        "pods garbage-collected", lambda: not job_pods(core, namespace, "shortlived"), timeout=30
    )


@pytest.mark.parametrize("policy", ["Foreground", "Background"])
def test_delete_job_removes_pods(core: Any, batch: Any, namespace: str, policy: str) -> None:
    batch.create_namespaced_job(
        namespace, job_manifest("busy", Behaviour.RUN_FOREVER, parallelism=2)
    )
    wait_for(
        "2 pods Running",
        lambda: [p for p in job_pods(core, namespace, "busy") if p.status.phase == "Running"][1:],
    )

    batch.delete_namespaced_job("busy", namespace, propagation_policy=policy)

    wait_for("Job gone", lambda: not _exists(lambda: batch.read_namespaced_job("busy", namespace)))
    wait_for("pods gone", lambda: not job_pods(core, namespace, "busy"))


def test_deleted_pod_waits_for_its_finalizer(core: Any, namespace: str) -> None:
    pod = {
        "metadata": {
            "name": "held",
            "finalizers": ["jobferry.test/hold"],
            **pod_metadata(Behaviour.RUN_FOREVER),
        },
        "spec": {"containers": [{"name": "main", "image": "example.invalid/x:1"}]},
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        "Running", lambda: core.read_namespaced_pod("held", namespace).status.phase == "Running"
    )

    core.delete_namespaced_pod("held", namespace)
    wait_for(
        "Failed while held",
        lambda: core.read_namespaced_pod("held", namespace).status.phase == "Failed",
    )
    assert core.read_namespaced_pod("held", namespace).metadata.deletion_timestamp is not None

    core.patch_namespaced_pod("held", namespace, {"metadata": {"finalizers": None}})
    wait_for(
        "pod removed", lambda: not _exists(lambda: core.read_namespaced_pod("held", namespace))
    )


def _one_pod_log(core: Any, batch: Any, namespace: str, job: str, done: str = "Complete") -> str:
    wait_for(done, lambda: job_condition(batch, namespace, job, done))
    (pod,) = job_pods(core, namespace, job)
    return read_log(core, pod.metadata.name, namespace, container="main")


def test_logs_from_annotation(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("talk", log="hello\nworld"))

    assert _one_pod_log(core, batch, namespace, "talk") == "hello\nworld\n"


def test_logs_name_the_behaviour(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("crash", Behaviour.FAIL, exit_code=4))

    log = _one_pod_log(core, batch, namespace, "crash", done="Failed")
    assert log == "jobferry-k8senv: behaviour=fail exit_code=4\n"


def test_logs_default_for_plain_pods(core: Any, batch: Any, namespace: str) -> None:
    batch.create_namespaced_job(namespace, job_manifest("quiet"))

    assert _one_pod_log(core, batch, namespace, "quiet") == DEFAULT_LOG_TEXT


def test_logs_from_file_and_set_pod_logs(
    k8s_control_plane: Cluster, core: Any, namespace: str, tmp_path: Path
) -> None:
    log_file = write_cri_log(tmp_path / "pod.log", "line 1\nline 2")
    pod = {
        "metadata": {
            "name": "filed",
            "annotations": {"jobferry.test/log-file": str(log_file)},
            "labels": {"jobferry.test/behaviour": "run-forever"},
        },
        "spec": {"containers": [{"name": "main", "image": "example.invalid/x:1"}]},
    }
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        "Running", lambda: core.read_namespaced_pod("filed", namespace).status.phase == "Running"
    )
    wait_for("log from file", lambda: _log_or_none(core, "filed", namespace) == "line 1\nline 2\n")

    k8s_control_plane.set_pod_logs(namespace, "filed", "replaced")
    wait_for("replaced log", lambda: _log_or_none(core, "filed", namespace) == "replaced\n")
    assert read_log(core, "filed", namespace, tail_lines=1) == "replaced\n"


def _log_or_none(core: Any, pod: str, namespace: str) -> str | None:
    try:
        return read_log(core, pod, namespace)
    # The Logs object may not have reached kwok yet: kwok answers 400 (no log) or old text.
    except ApiException:
        return None


def test_service_account_without_rbac_is_forbidden(
    k8s_control_plane: Cluster, api: Any, namespace: str
) -> None:
    kubeconfig = k8s_control_plane.sa_kubeconfig(namespace, "robot")
    robot = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    try:
        with pytest.raises(ApiException) as denied:
            k8s.BatchV1Api(robot).create_namespaced_job(namespace, job_manifest("sneaky"))
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:robot" in denied.value.body

        rbac = k8s.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "jobs"},
                "rules": [
                    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}
                ],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "robot-jobs"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "jobs",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": namespace}],
            },
        )
        wait_for(
            "RBAC to allow", lambda: _can_create_job(k8s.BatchV1Api(robot), namespace), timeout=10
        )
    finally:
        robot.close()


def _can_create_job(batch: Any, namespace: str) -> bool:
    try:
        batch.create_namespaced_job(namespace, job_manifest("allowed"), dry_run="All")
    # The RoleBinding may take a moment to reach the authorizer's cache.
    except ApiException as e:
        if e.status == 403:
            return False
        raise
    return True


def _seconds(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()
