from __future__ import annotations

from scheduler.models import ConfigMapKeyRef, EnvVar, SecretKeyRef, Toleration, WorkflowRequest
from workers.backends.manifest import build_job


def request(**fields: object) -> WorkflowRequest:
    base: dict[str, object] = {
        "workflow_id": "report-1",
        "image": "ghcr.io/acme/report:1.4.2",
        "command": ["python", "-m", "report"],
    }
    return WorkflowRequest(**{**base, **fields})  # type: ignore[arg-type]


def test_defaults_follow_the_seed_guide() -> None:
    job = build_job(request(), "jobferry-report-1-abcdef12", "jobferry")
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"] == "jobferry-report-1-abcdef12"
    assert job["metadata"]["namespace"] == "default"
    assert job["metadata"]["labels"] == {
        "app": "jobferry",
        "workflow-id": "report-1",
        "app.kubernetes.io/managed-by": "jobferry",
    }
    spec = job["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"] == [
        {
            "name": "workflow",
            "image": "ghcr.io/acme/report:1.4.2",
            "command": ["python", "-m", "report"],
        }
    ]
    assert spec["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_everything_a_request_can_say_reaches_the_manifest() -> None:
    job = build_job(
        request(
            args=["--day", "2026-12-04"],
            env=[
                EnvVar(name="MODE", value="full"),
                EnvVar(name="TOKEN", secret_key_ref=SecretKeyRef(name="report", key="token")),
                EnvVar(name="REGION", config_map_key_ref=ConfigMapKeyRef(name="cfg", key="region")),
            ],
            cpu_request="500m",
            cpu_limit="2",
            memory_request="512Mi",
            memory_limit="1Gi",
            namespace="batch",
            backoff_limit=0,
            ttl_seconds_after_finished=60,
            active_deadline_seconds=900,
            labels={"team": "data"},
            annotations={"acme.io/owner": "ops@acme.io"},
            service_account="report-runner",
            image_pull_secrets=["ghcr"],
            node_selector={"pool": "batch"},
            tolerations=[Toleration(key="dedicated", value="batch", effect="NoSchedule")],
        ),
        "jobferry-report-1-abcdef12",
        "reports",
        extra_env={"TRACEPARENT": "00-abc-def-01"},
    )
    spec = job["spec"]
    assert job["metadata"]["namespace"] == "batch"
    assert job["metadata"]["labels"]["team"] == "data"
    assert job["metadata"]["labels"]["app"] == "reports"
    assert job["metadata"]["annotations"] == {"acme.io/owner": "ops@acme.io"}
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 60
    assert spec["activeDeadlineSeconds"] == 900
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["--day", "2026-12-04"]
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }
    assert container["env"] == [
        {"name": "MODE", "value": "full"},
        {
            "name": "TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "report", "key": "token", "optional": False}},
        },
        {
            "name": "REGION",
            "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "region", "optional": False}},
        },
        {"name": "TRACEPARENT", "value": "00-abc-def-01"},
    ]
    assert pod["serviceAccountName"] == "report-runner"
    assert pod["imagePullSecrets"] == [{"name": "ghcr"}]
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
    ]
    assert spec["template"]["metadata"]["annotations"] == {"acme.io/owner": "ops@acme.io"}


def test_no_ttl_means_kept_forever() -> None:
    job = build_job(request(ttl_seconds_after_finished=None), "n", "jobferry")
    assert "ttlSecondsAfterFinished" not in job["spec"]
