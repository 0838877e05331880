"""Traces and metrics of workflows on the real control plane (kube-apiserver, Job controller).

The producer is `jobferry submit` in its own process, the worker a real prefork worker with the
shipped Role; both export spans to a receiver in the test. The Job and its pod are read back
from the real API server: the pod's container carries the trace's TRACEPARENT.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.naming import job_name
from tests.e2e.conftest import E2E, NAMESPACE
from tests.integration.conftest import Pipeline, make_pipeline, print_logs_if_failed
from tests.k8senv.behaviours import BEHAVIOUR_LABEL
from tests.otlp import STATUS_ERROR, OtlpReceiver, ReceivedSpan
from tests.services import ROOT, RedisServer, free_port, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    yield otlp
    otlp.stop()


@pytest.fixture(scope="module")
def observed_k8s(
    redis_srv: RedisServer,
    e2e: E2E,
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    url = redis_srv.url.rsplit("/", 1)[0] + "/3"
    redis_srv.client().flushall()
    pipeline = make_pipeline(
        url,
        tmp_path_factory.mktemp("e2e-observability-logs"),
        {
            "JOBFERRY_BACKEND": "kubernetes",
            "JOBFERRY_LOG_FORMAT": "json",
            "JOBFERRY_METRICS_PORT": str(free_port()),
        },
    )
    pipeline.env.update(
        {
            "KUBECONFIG": str(e2e.worker_kubeconfig),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    pipeline.start_worker(concurrency=2)
    yield pipeline
    pipeline.stop()


@pytest.fixture(autouse=True)
def _worker_logs_on_failure(
    request: pytest.FixtureRequest, observed_k8s: Pipeline
) -> Iterator[None]:
    yield
    print_logs_if_failed(request, observed_k8s)


def submit(pipeline: Pipeline, workflow_id: str, behaviour: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "workers",
            "submit",
            "--id",
            workflow_id,
            "--image",
            "ghcr.io/acme/report:1.4.2",
            "--namespace",
            NAMESPACE,
            "--backoff-limit",
            "0",
            "--label",
            f"{BEHAVIOUR_LABEL}={behaviour}",
            "--annotation",
            "jobferry.test/duration=1s",
            "--",
            "python",
            "-m",
            "report",
        ],
        env=pipeline.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )


def trace_of(receiver: OtlpReceiver, workflow_id: str) -> list[ReceivedSpan]:
    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.snapshot()
        ends = [
            s
            for s in spans
            if s.name == "jobferry.outcome" and s.attributes.get("workflow.id") == workflow_id
        ]
        return [s for s in spans if s.trace_id == ends[0].trace_id] if ends else None

    return wait_for(f"the spans of {workflow_id}", complete, timeout=60, interval=0.3)


def pod_env(e2e: E2E, workflow_id: str) -> dict[str, str]:
    response = e2e.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"workflow-id={workflow_id}", _preload_content=False
    )
    (pod,) = json.loads(response.data)["items"]
    env = pod["spec"]["containers"][0].get("env") or []
    return {e["name"]: e.get("value", "") for e in env}


def test_trace_and_metrics_on_the_real_control_plane(
    observed_k8s: Pipeline, e2e: E2E, receiver: OtlpReceiver
) -> None:
    submit(observed_k8s, "e2e-obs-ok", "succeed")
    submit(observed_k8s, "e2e-obs-bad", "fail")
    ok = observed_k8s.client.wait("e2e-obs-ok", timeout=90)
    bad = observed_k8s.client.wait("e2e-obs-bad", timeout=90)
    assert (ok.state.value, bad.state.value) == ("succeeded", "failed"), (ok, bad)

    for workflow_id, outcome in (("e2e-obs-ok", ok), ("e2e-obs-bad", bad)):
        spans = trace_of(receiver, workflow_id)
        by_id = {s.span_id: s for s in spans}
        (root,) = [s for s in spans if s.parent_id not in by_id]
        assert (root.name, root.service) == ("jobferry.submit", "jobferry-producer")
        (launch,) = [s for s in spans if s.name == "run/jobferry.launch"]
        (create,) = [s for s in spans if s.name == "k8s create jobs"]
        assert create.parent_id == launch.span_id
        assert create.attributes["k8s.job.name"] == job_name(workflow_id)
        assert create.attributes["k8s.namespace"] == NAMESPACE
        assert create.attributes["http.response.status_code"] == 201
        (end,) = [s for s in spans if s.name == "jobferry.outcome"]
        assert (end.status_code == STATUS_ERROR) == (outcome.state.value == "failed")
        # The pod the Job controller made carries the trace on to the workload.
        traceparent = pod_env(e2e, workflow_id)["TRACEPARENT"]
        assert traceparent.split("-")[1:3] == [root.trace_id, launch.span_id]

    port = observed_k8s.env["JOBFERRY_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    finished = {
        (s.labels["state"], s.labels["reason"]): s.value
        for s in families["jobferry_workflows_finished"].samples
        if s.name.endswith("_total")
    }
    assert finished == {("succeeded", "Completed"): 1, ("failed", "BackoffLimitExceeded"): 1}
    created = [
        s.value
        for s in families["jobferry_kube_api_requests"].samples
        if s.name.endswith("_total") and (s.labels["verb"], s.labels["code"]) == ("create", "201")
    ]
    assert created == [2]
