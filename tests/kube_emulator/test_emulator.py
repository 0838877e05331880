"""The emulator, checked through the real ``kubernetes`` client as worker code will use it.

Every expected status, reason and message below is what a real API server answers; where
the emulator deliberately simplifies (garbage collection at once, no controllers) the test
says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from . import KubeEmulator, RecordedRequest

JOBS_PATH = "/apis/batch/v1/namespaces/default/jobs"


def job_manifest(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36"}],
                }
            },
            **spec,
        },
    }


def body_of(error: ApiException) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(error.body)
    return data


@pytest.fixture
def api(kube_emulator: KubeEmulator, kube_emulator_kubeconfig: Path) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(
        config_file=str(kube_emulator_kubeconfig), context="emulator"
    )
    yield api_client
    api_client.close()


@pytest.fixture
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


# -- connection -----------------------------------------------------------------------------


def test_kubeconfig_loads_with_load_kube_config(
    kube_emulator: KubeEmulator, tmp_path: Path
) -> None:
    path = kube_emulator.write_kubeconfig(tmp_path / "nested" / "kubeconfig")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == kube_emulator.url
    assert configuration.api_key["BearerToken"] == f"Bearer {kube_emulator.token}"
    _, active = config.list_kube_config_contexts(config_file=str(path))
    assert active["name"] == "emulator"


def test_request_without_the_token_is_unauthorized(kube_emulator: KubeEmulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{kube_emulator.url}{JOBS_PATH}", timeout=5)
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["reason"] == "Unauthorized"


def test_version_and_discovery(kube_emulator: KubeEmulator, api: client.ApiClient) -> None:
    assert client.VersionApi(api).get_code().major == "1"
    resources = client.BatchV1Api(api).get_api_resources()
    assert "jobs" in [resource.name for resource in resources.resources]


def test_a_separate_process_reaches_it_with_the_kubeconfig(
    kube_emulator: KubeEmulator, kube_emulator_kubeconfig: Path
) -> None:
    script = textwrap.dedent(
        """
        from kubernetes import client, config
        config.load_kube_config()
        client.BatchV1Api().create_namespaced_job("default", {
            "metadata": {"name": "from-worker"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "busybox"}]}}},
        })
        """
    )
    env = {**os.environ, "KUBECONFIG": str(kube_emulator_kubeconfig)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert kube_emulator.get_job("default", "from-worker") is not None


def test_standalone_start_stop_frees_the_port() -> None:
    emulator = KubeEmulator(token=None).start()
    url = emulator.url
    with urllib.request.urlopen(f"{url}/api/v1/namespaces/default", timeout=5) as response:
        assert json.loads(response.read())["metadata"]["name"] == "default"
    emulator.stop()
    emulator.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/version", timeout=2)


# -- create / get ---------------------------------------------------------------------------


def test_create_fills_server_side_metadata(batch: client.BatchV1Api) -> None:
    _, status, _ = batch.create_namespaced_job_with_http_info("default", job_manifest("job-1"))
    job = batch.read_namespaced_job("job-1", "default")
    assert status == 201
    assert job.metadata.uid and job.metadata.creation_timestamp and job.metadata.resource_version
    assert job.metadata.namespace == "default"
    assert job.spec.backoff_limit == 6 and job.spec.completions == 1 and job.spec.parallelism == 1
    labels = job.spec.template.metadata.labels
    assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == "job-1"
    assert (
        labels["controller-uid"] == labels["batch.kubernetes.io/controller-uid"] == job.metadata.uid
    )
    assert job.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": job.metadata.uid
    }


def test_create_with_generate_name(batch: client.BatchV1Api) -> None:
    manifest = job_manifest("")
    manifest["metadata"] = {"generateName": "wf-"}
    job = batch.create_namespaced_job("default", manifest)
    assert job.metadata.name.startswith("wf-") and len(job.metadata.name) == len("wf-") + 5


def test_duplicate_create_is_409_already_exists(batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("default", job_manifest("job-1"))
    body = body_of(caught.value)
    assert caught.value.status == 409
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'jobs.batch "job-1" already exists'
    assert body["details"] == {"name": "job-1", "group": "batch", "kind": "jobs"}


def test_get_missing_is_404_not_found(batch: client.BatchV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        batch.read_namespaced_job("nope", "default")
    body = body_of(caught.value)
    assert (caught.value.status, body["reason"]) == (404, "NotFound")
    assert body["message"] == 'jobs.batch "nope" not found'


def test_create_in_missing_namespace_is_404_for_the_namespace(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("x", job_manifest("job-1"))
    assert caught.value.status == 404
    assert body_of(caught.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'namespaces "x" not found',
        "reason": "NotFound",
        "details": {"name": "x", "kind": "namespaces"},
        "code": 404,
    }
    kube_emulator.add_namespace("x")
    assert batch.create_namespaced_job("x", job_manifest("job-1")).metadata.namespace == "x"


def test_invalid_job_is_422_with_causes(batch: client.BatchV1Api) -> None:
    manifest = job_manifest("job-1")
    manifest["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("default", manifest)
    body = body_of(caught.value)
    assert (caught.value.status, body["reason"]) == (422, "Invalid")
    assert body["message"] == (
        'Job.batch "job-1" is invalid: spec.template.spec.restartPolicy: '
        'Required value: valid values: "OnFailure", "Never"'
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": 'Required value: valid values: "OnFailure", "Never"',
            "field": "spec.template.spec.restartPolicy",
        }
    ]


# -- list -----------------------------------------------------------------------------------


def test_list_by_label_selector(kube_emulator: KubeEmulator, batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job("default", job_manifest("a", {"app": "jobferry", "run": "1"}))
    batch.create_namespaced_job("default", job_manifest("b", {"app": "jobferry", "run": "2"}))
    batch.create_namespaced_job("default", job_manifest("c", {"app": "other"}))

    def names(selector: str) -> list[str]:
        return [
            job.metadata.name
            for job in batch.list_namespaced_job("default", label_selector=selector).items
        ]

    assert names("app=jobferry") == ["a", "b"]
    assert names("app=jobferry,run=2") == ["b"]
    assert names("app!=jobferry") == ["c"]
    assert names("run in (1,3)") == ["a"]
    assert names("!run") == ["c"]
    assert [
        job["metadata"]["name"] for job in kube_emulator.list_jobs("default", {"app": "other"})
    ] == ["c"]


def test_list_by_field_selector_and_across_namespaces(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    kube_emulator.add_namespace("other")
    batch.create_namespaced_job("default", job_manifest("a"))
    batch.create_namespaced_job("other", job_manifest("b"))
    picked = batch.list_namespaced_job("default", field_selector="metadata.name=a").items
    everywhere = batch.list_job_for_all_namespaces().items
    assert [job.metadata.name for job in picked] == ["a"]
    assert [(job.metadata.namespace, job.metadata.name) for job in everywhere] == [
        ("default", "a"),
        ("other", "b"),
    ]
    with pytest.raises(ApiException) as caught:
        batch.list_namespaced_job("default", field_selector="spec.nonsense=1")
    assert caught.value.status == 400


def test_list_pages_with_limit_and_continue(batch: client.BatchV1Api) -> None:
    for name in ("a", "b", "c"):
        batch.create_namespaced_job("default", job_manifest(name))
    first = batch.list_namespaced_job("default", limit=2)
    rest = batch.list_namespaced_job("default", limit=2, _continue=first.metadata._continue)
    assert [job.metadata.name for job in first.items] == ["a", "b"]
    assert [job.metadata.name for job in rest.items] == ["c"] and rest.metadata._continue is None


# -- delete ---------------------------------------------------------------------------------


def _job_with_pods(kube_emulator: KubeEmulator, batch: client.BatchV1Api, name: str) -> list[str]:
    batch.create_namespaced_job("default", job_manifest(name))
    return [kube_emulator.add_pod_for_job("default", name) for _ in range(2)]


def test_delete_background_removes_the_job_and_its_pods(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    _job_with_pods(kube_emulator, batch, "doomed")
    kept = _job_with_pods(kube_emulator, batch, "kept")
    status = batch.delete_namespaced_job("doomed", "default", propagation_policy="Background")
    assert (status.kind, status.status, status.details.kind) == ("Status", "Success", "jobs")
    assert kube_emulator.get_job("default", "doomed") is None
    assert sorted(pod.metadata.name for pod in core.list_namespaced_pod("default").items) == sorted(
        kept
    )


def test_delete_foreground_answers_the_object_being_deleted(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    _job_with_pods(kube_emulator, batch, "doomed")
    response = batch.delete_namespaced_job(
        "doomed",
        "default",
        body=client.V1DeleteOptions(propagation_policy="Foreground"),
        _preload_content=False,
    )
    answered = json.loads(response.data)
    assert response.status == 200 and answered["kind"] == "Job"
    assert answered["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert answered["metadata"]["deletionTimestamp"]
    assert (
        kube_emulator.get_job("default", "doomed") is None
        and kube_emulator.list_pods("default") == []
    )


def test_delete_orphan_keeps_pods_without_the_owner(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    pods = _job_with_pods(kube_emulator, batch, "doomed")
    batch.delete_namespaced_job("doomed", "default", propagation_policy="Orphan")
    left = kube_emulator.list_pods("default", "job-name=doomed")
    assert sorted(pod["metadata"]["name"] for pod in left) == sorted(pods)
    assert all("ownerReferences" not in pod["metadata"] for pod in left)


def test_delete_without_policy_orphans_with_the_real_warning(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    _job_with_pods(kube_emulator, batch, "doomed")
    _, _, headers = batch.delete_namespaced_job_with_http_info("doomed", "default")
    assert "child pods are preserved by default" in headers["Warning"]
    assert len(kube_emulator.list_pods("default")) == 2


def test_delete_options_body_wins_over_the_query(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    _job_with_pods(kube_emulator, batch, "doomed")
    # As on a real server: with a body, the propagationPolicy query parameter is ignored.
    batch.delete_namespaced_job(
        "doomed", "default", propagation_policy="Background", body=client.V1DeleteOptions()
    )
    assert len(kube_emulator.list_pods("default")) == 2


def test_delete_takes_unowned_pods_by_label_but_not_another_jobs(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    first = batch.create_namespaced_job("default", job_manifest("doomed"))
    old_pod = kube_emulator.add_pod_for_job("default", "doomed")
    batch.delete_namespaced_job("doomed", "default", propagation_policy="Orphan")
    batch.create_namespaced_job("default", job_manifest("doomed"))
    labelled = {
        "metadata": {"name": "by-hand", "labels": {"job-name": "doomed"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    core.create_namespaced_pod("default", labelled)
    batch.delete_namespaced_job("doomed", "default", propagation_policy="Background")
    left = kube_emulator.list_pods("default")
    # The first Job's orphan stays: its controller-uid names another Job.
    assert [pod["metadata"]["name"] for pod in left] == [old_pod]
    assert left[0]["metadata"]["labels"]["controller-uid"] == first.metadata.uid


def test_delete_collection_by_selector(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job("default", job_manifest("a", {"run": "1"}))
    batch.create_namespaced_job("default", job_manifest("b", {"run": "2"}))
    kube_emulator.add_pod_for_job("default", "a")
    batch.delete_collection_namespaced_job(
        "default", label_selector="run=1", propagation_policy="Background"
    )
    assert [job["metadata"]["name"] for job in kube_emulator.list_jobs("default")] == ["b"]
    assert kube_emulator.list_pods("default") == []


def test_delete_precondition_on_uid_is_409_conflict(batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-the-uid"))
    with pytest.raises(ApiException) as caught:
        batch.delete_namespaced_job("job-1", "default", body=options)
    assert (caught.value.status, body_of(caught.value)["reason"]) == (409, "Conflict")


def test_delete_missing_is_404(batch: client.BatchV1Api) -> None:
    with pytest.raises(ApiException) as caught:
        batch.delete_namespaced_job("nope", "default", propagation_policy="Background")
    assert caught.value.status == 404


# -- status and updates ---------------------------------------------------------------------


def test_status_subresource_changes_only_status(batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    patched = batch.patch_namespaced_job_status(
        "job-1", "default", {"status": {"active": 1}, "spec": {"parallelism": 9}}
    )
    assert patched.status.active == 1 and patched.spec.parallelism == 1
    main = batch.patch_namespaced_job(
        "job-1", "default", {"metadata": {"labels": {"x": "y"}}, "status": {"active": 5}}
    )
    assert main.metadata.labels["x"] == "y" and main.status.active == 1


def test_replace_status_and_stale_resource_version(batch: client.BatchV1Api) -> None:
    job = batch.create_namespaced_job("default", job_manifest("job-1"))
    job.status = client.V1JobStatus(succeeded=1)
    replaced = batch.replace_namespaced_job_status("job-1", "default", job)
    assert replaced.status.succeeded == 1
    with pytest.raises(ApiException) as caught:
        batch.replace_namespaced_job_status(
            "job-1", "default", job
        )  # still the old resourceVersion
    body = body_of(caught.value)
    assert (caught.value.status, body["reason"]) == (409, "Conflict")
    assert body["message"].startswith(
        'Operation cannot be fulfilled on jobs.batch "job-1": the object has been modified'
    )


def test_json_patch_and_immutable_template(batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    patched = batch.patch_namespaced_job(
        "job-1", "default", [{"op": "add", "path": "/metadata/labels/k", "value": "v"}]
    )
    assert patched.metadata.labels["k"] == "v"
    with pytest.raises(ApiException) as caught:
        batch.patch_namespaced_job(
            "job-1",
            "default",
            [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "x"}],
        )
    causes = body_of(caught.value)["details"]["causes"]
    assert (caught.value.status, causes[0]["field"]) == (422, "spec.template.spec")


# -- test-side helpers ----------------------------------------------------------------------


def test_helpers_move_status_seen_by_the_client(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    kube_emulator.set_job_status("default", "job-1", {"active": 1})
    assert batch.read_namespaced_job_status("job-1", "default").status.active == 1
    kube_emulator.mark_job_succeeded("default", "job-1")
    conditions = batch.read_namespaced_job("job-1", "default").status.conditions
    assert [(c.type, c.status) for c in conditions] == [
        ("SuccessCriteriaMet", "True"),
        ("Complete", "True"),
    ]
    kube_emulator.mark_job_failed("default", "job-1")
    failed = kube_emulator.get_job("default", "job-1")
    assert (
        failed is not None
        and failed["status"]["conditions"][-1]["reason"] == "BackoffLimitExceeded"
    )
    statuses = [
        version["status"] for version in kube_emulator.job_history("default", "job-1") if version
    ]
    assert statuses[0] == {} and statuses[1] == {"active": 1}
    with pytest.raises(LookupError):
        kube_emulator.set_job_status("default", "nope", {})


def test_pod_for_job_looks_like_the_controllers(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    job = batch.create_namespaced_job("default", job_manifest("job-1"))
    name = kube_emulator.add_pod_for_job(
        "default",
        "job-1",
        phase="Failed",
        container_state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    )
    pods = core.list_namespaced_pod(
        "default", label_selector="batch.kubernetes.io/job-name=job-1"
    ).items
    assert [pod.metadata.name for pod in pods] == [name] and name.startswith("job-1-")
    pod = pods[0]
    assert pod.metadata.labels["controller-uid"] == job.metadata.uid
    assert (pod.metadata.owner_references[0].kind, pod.metadata.owner_references[0].uid) == (
        "Job",
        job.metadata.uid,
    )
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 137
    kube_emulator.update_pod_status("default", name, {"phase": "Succeeded"})
    updated = core.read_namespaced_pod(name, "default")
    assert updated.status.phase == "Succeeded" and updated.status.container_statuses
    with pytest.raises(LookupError):
        kube_emulator.add_pod_for_job("default", "nope")


def read_log(core: client.CoreV1Api, pod: str, **params: Any) -> str:
    # kubernetes 36 returns the repr of the bytes ("b'...'") from read_namespaced_pod_log
    # (kubernetes-client/python#2596); the raw response is the version-proof way to read it.
    response = core.read_namespaced_pod_log(pod, "default", _preload_content=False, **params)
    text: str = response.data.decode()
    return text


def test_pod_log_honours_tail_lines(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    pod = kube_emulator.add_pod_for_job("default", "job-1", name="job-1-abcde")
    kube_emulator.set_pod_log("default", pod, "one\ntwo\nthree\n")
    assert read_log(core, pod) == "one\ntwo\nthree\n"
    assert read_log(core, pod, tail_lines=2) == "two\nthree\n"
    assert read_log(core, pod, container="main", limit_bytes=3) == "one"
    assert read_log(core, pod, tail_lines=0) == ""


def test_pod_log_errors_like_the_real_server(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    pod = kube_emulator.add_pod_for_job(
        "default",
        "job-1",
        phase="Pending",
        container_state={"waiting": {"reason": "ImagePullBackOff"}},
    )
    with pytest.raises(ApiException) as waiting:
        core.read_namespaced_pod_log(pod, "default")
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod_log("nope", "default")
    assert waiting.value.status == 400
    assert (
        body_of(waiting.value)["message"]
        == f'container "main" in pod "{pod}" is waiting to start: ImagePullBackOff'
    )
    assert body_of(missing.value)["message"] == 'pods "nope" not found'


def test_pods_through_the_api(core: client.CoreV1Api) -> None:
    pod = {
        "metadata": {"name": "p1", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    created = core.create_namespaced_pod("default", pod)
    assert created.status.phase == "Pending"
    assert [
        p.metadata.name for p in core.list_namespaced_pod("default", label_selector="a=b").items
    ] == ["p1"]
    deleted = core.delete_namespaced_pod("p1", "default")
    assert deleted.metadata.name == "p1"  # pods answer a delete with the object
    assert core.list_namespaced_pod("default").items == []


# -- faults ---------------------------------------------------------------------------------


def test_fail_next_403_then_success(kube_emulator: KubeEmulator, batch: client.BatchV1Api) -> None:
    kube_emulator.fail_next("POST", r"/jobs$", 403)
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("default", job_manifest("job-1"))
    body = body_of(caught.value)
    assert (caught.value.status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == (
        'jobs.batch is forbidden: User "system:serviceaccount:default:jobferry-worker" '
        'cannot create resource "jobs" in API group "batch" in the namespace "default"'
    )
    assert kube_emulator.get_job("default", "job-1") is None  # the fault stopped the write
    batch.create_namespaced_job("default", job_manifest("job-1"))


def test_fail_next_422_with_causes(kube_emulator: KubeEmulator, batch: client.BatchV1Api) -> None:
    cause = {
        "reason": "FieldValueInvalid",
        "message": 'Invalid value: "x": bad',
        "field": "spec.template",
    }
    kube_emulator.fail_next("POST", r"/jobs$", 422, causes=[cause])
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("default", job_manifest("job-1"))
    body = body_of(caught.value)
    assert (body["reason"], body["details"]["causes"]) == ("Invalid", [cause])
    assert body["message"] == 'Job.batch "job-1" is invalid: spec.template: Invalid value: "x": bad'


def test_fail_next_503_twice_then_success(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    kube_emulator.fail_next("GET", r"/jobs$", 503, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            batch.list_namespaced_job("default")
        assert (caught.value.status, body_of(caught.value)["reason"]) == (503, "ServiceUnavailable")
    assert batch.list_namespaced_job("default").items == []


def test_fail_next_429_is_retried_by_urllib3_first(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    # urllib3 (under the official client) retries a 429 carrying Retry-After up to 3 times,
    # as it would against a real server: one 429 never reaches the caller.
    kube_emulator.fail_next("*", r"/jobs", 429, retry_after=0)
    assert batch.list_namespaced_job("default").items == []
    assert [request.status for request in kube_emulator.requests] == [429, 200]


def test_fail_next_429_past_the_retries(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    kube_emulator.fail_next("GET", r"/jobs$", 429, times=4, retry_after=0)
    with pytest.raises(ApiException) as caught:
        batch.list_namespaced_job("default")
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "0"
    assert body_of(caught.value)["reason"] == "TooManyRequests"
    assert kube_emulator.count_requests("GET", r"/jobs$") == 4


def test_fail_next_custom_reason_and_message(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    kube_emulator.fail_next(
        "GET", r"/jobs/x$", 500, reason="InternalError", message="etcdserver: request timed out"
    )
    with pytest.raises(ApiException) as caught:
        batch.read_namespaced_job("x", "default")
    assert body_of(caught.value)["message"] == "etcdserver: request timed out"


def test_forbid_until_allowed(kube_emulator: KubeEmulator, batch: client.BatchV1Api) -> None:
    kube_emulator.forbid("create", "jobs")
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            batch.create_namespaced_job("default", job_manifest("job-1"))
        assert caught.value.status == 403
    assert batch.list_namespaced_job("default").items == []  # other verbs are allowed
    kube_emulator.allow("create", "jobs")
    batch.create_namespaced_job("default", job_manifest("job-1"))


def test_forbid_a_subresource(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api, core: client.CoreV1Api
) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    pod = kube_emulator.add_pod_for_job("default", "job-1")
    kube_emulator.forbid("get", "pods/log")
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod_log(pod, "default")
    assert body_of(caught.value)["message"] == (
        f'pods "{pod}" is forbidden: User "system:serviceaccount:default:jobferry-worker" '
        'cannot get resource "pods/log" in API group "" in the namespace "default"'
    )
    assert core.read_namespaced_pod(pod, "default").metadata.name == pod


def test_delay_next_slows_one_response(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    kube_emulator.delay_next("GET", r"/jobs$", 0.3)
    started = time.monotonic()
    batch.list_namespaced_job("default")
    slow = time.monotonic() - started
    started = time.monotonic()
    batch.list_namespaced_job("default")
    assert slow >= 0.3 > time.monotonic() - started


# -- journal, watch, reset ------------------------------------------------------------------


def test_requests_log_counts_api_calls(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    with pytest.raises(ApiException):
        batch.create_namespaced_job("default", job_manifest("job-1"))
    batch.read_namespaced_job("job-1", "default")
    assert kube_emulator.requests == [
        RecordedRequest("POST", JOBS_PATH, 201),
        ("POST", JOBS_PATH, 409),
        ("GET", f"{JOBS_PATH}/job-1", 200),
    ]
    assert kube_emulator.count_requests("post", r"/jobs$") == 2
    kube_emulator.clear_requests()
    assert kube_emulator.requests == []


def test_watch_streams_selected_changes(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    batch.create_namespaced_job("default", job_manifest("mine", {"app": "jobferry"}))
    batch.create_namespaced_job("default", job_manifest("other"))
    kube_emulator.set_job_status("default", "mine", {"active": 1})
    stream = watch.Watch().stream(
        batch.list_namespaced_job, "default", label_selector="app=jobferry", timeout_seconds=1
    )
    events = [(event["type"], event["object"].metadata.name) for event in stream]
    assert events == [("ADDED", "mine")]


def test_watch_resumes_from_a_resource_version(
    kube_emulator: KubeEmulator, batch: client.BatchV1Api
) -> None:
    created = batch.create_namespaced_job("default", job_manifest("job-1"))
    kube_emulator.set_job_status("default", "job-1", {"active": 1})
    batch.delete_namespaced_job("job-1", "default", propagation_policy="Background")
    stream = watch.Watch().stream(
        batch.list_namespaced_job,
        "default",
        resource_version=created.metadata.resource_version,
        timeout_seconds=1,
    )
    assert [event["type"] for event in stream] == ["MODIFIED", "DELETED"]


def test_watch_sees_live_changes(kube_emulator: KubeEmulator, batch: client.BatchV1Api) -> None:
    batch.create_namespaced_job("default", job_manifest("job-1"))
    watcher = watch.Watch()
    seen: list[tuple[str, Any]] = []
    for event in watcher.stream(batch.list_namespaced_job, "default", timeout_seconds=5):
        seen.append((event["type"], event["object"].status.active))
        if event["type"] == "ADDED":
            kube_emulator.set_job_status("default", "job-1", {"active": 1})
        else:
            watcher.stop()
    assert seen == [("ADDED", None), ("MODIFIED", 1)]


def test_reset_forgets_everything(kube_emulator: KubeEmulator, batch: client.BatchV1Api) -> None:
    kube_emulator.add_namespace("other")
    batch.create_namespaced_job("other", job_manifest("job-1"))
    kube_emulator.forbid("*", "*")
    kube_emulator.reset()
    assert kube_emulator.requests == []
    assert batch.list_job_for_all_namespaces().items == []
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job("other", job_manifest("job-1"))
    assert caught.value.status == 404
