"""The status cache's shapes and the settings that govern the watcher and the reconciler."""

from __future__ import annotations

import pytest

from scheduler.errors import RequestError
from scheduler.settings import load_settings
from workers import cache
from workers.backends import classify
from workers.backends.base import JobPhase

POD = {
    "metadata": {
        "name": "jobferry-r-1-abcde",
        "namespace": "default",
        "labels": {"batch.kubernetes.io/job-name": "jobferry-r-1", "workflow-id": "r-1"},
        "creationTimestamp": "2026-12-04T10:00:00Z",
        "managedFields": [{"manager": "kubelet"}],
        "ownerReferences": [{"kind": "Job", "name": "jobferry-r-1"}],
    },
    "spec": {"containers": [{"name": "workflow", "env": [{"name": "TOKEN", "value": "s3cret"}]}]},
    "status": {
        "phase": "Failed",
        "startTime": "2026-12-04T10:00:01Z",
        "containerStatuses": [
            {
                "name": "workflow",
                "image": "ghcr.io/acme/report:1.4.2",
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            }
        ],
    },
}
JOB = {
    "metadata": {
        "name": "jobferry-r-1",
        "namespace": "default",
        "labels": {"workflow-id": "r-1"},
        "creationTimestamp": "2026-12-04T10:00:00Z",
    },
    "spec": {"template": {"spec": {"containers": [{"env": [{"value": "s3cret"}]}]}}},
    "status": {
        "failed": 1,
        "startTime": "2026-12-04T10:00:00Z",
        "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"}
        ],
    },
}


def test_trimmed_objects_classify_like_the_originals_and_drop_the_spec() -> None:
    job, pod = cache.trim_job(JOB), cache.trim_pod(POD)
    assert classify.job_status(job, [pod]) == classify.job_status(JOB, [POD])
    assert classify.job_status(job, [pod]).reason == "OOMKilled"
    # Env values (secrets among them) and bulky managedFields never reach the cache.
    assert "s3cret" not in repr(job) + repr(pod)
    assert "managedFields" not in repr(pod)


def test_a_pod_names_its_job_by_label_or_owner() -> None:
    assert cache.pod_job(POD) == "jobferry-r-1"
    owned = {"metadata": {"ownerReferences": [{"kind": "Job", "name": "j"}]}}
    assert cache.pod_job(owned) == "j"
    assert cache.pod_job({"metadata": {"name": "lonely"}}) is None


def test_not_seen_yet_is_an_open_phase() -> None:
    assert cache.NOT_SEEN_YET.phase is JobPhase.PENDING and not cache.NOT_SEEN_YET.stuck


def test_watch_namespaces_take_a_comma_list_and_reject_bad_names() -> None:
    settings = load_settings(environ={}, watch_namespaces="team-a, team-b")
    assert settings.watch_namespaces == ["team-a", "team-b"]
    with pytest.raises(RequestError, match="JOBFERRY_WATCH_NAMESPACES"):
        load_settings(environ={}, watch_namespaces="Team_A")


def test_the_reconciler_never_resends_a_check_that_is_only_waiting() -> None:
    with pytest.raises(RequestError, match="JOBFERRY_RECONCILE_SILENCE_SECONDS"):
        load_settings(environ={}, watch_check_interval_seconds=300, reconcile_silence_seconds=400)
    with pytest.raises(RequestError, match="JOBFERRY_WATCH_CHECK_INTERVAL_SECONDS"):
        load_settings(environ={}, watch_check_interval_seconds=1000, reconcile_silence_seconds=5000)
