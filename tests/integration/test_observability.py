"""Traces, metrics and logs of real workflows, as an operator would read them.

A producer process (`jobferry submit`) and a real worker process (prefork, two children) export
spans over OTLP/HTTP to a receiver in the test; the worker serves Prometheus metrics and writes
JSON logs. The Kubernetes API is the emulator, moved by the test like a Job controller.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler import OutcomeState, WorkflowOutcome, WorkflowRequest
from scheduler.naming import job_name
from tests.integration.conftest import (
    Pipeline,
    created_job,
    make_kube_pipeline,
    make_pipeline,
    print_logs_if_failed,
    terminated,
)
from tests.kube_emulator import KubeEmulator
from tests.otlp import STATUS_ERROR, OtlpReceiver, ReceivedSpan
from tests.services import ROOT, free_port, wait_for

NS = "default"
SECRET = "tok-9f8e7d6c5b4a"
WORKFLOW_ATTRIBUTES = ("workflow.id", "k8s.namespace", "k8s.container.image", "k8s.job.name")
IMAGE = "ghcr.io/acme/report:1.4.2"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    otlp = OtlpReceiver().start()
    yield otlp
    otlp.stop()


@pytest.fixture
def observed(
    redis_url: str,
    kube_emulator: KubeEmulator,
    kube_emulator_kubeconfig: Path,
    receiver: OtlpReceiver,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Pipeline]:
    """A pipeline whose worker exports spans, serves /metrics and logs JSON."""
    pipeline = make_kube_pipeline(
        redis_url,
        tmp_path / "logs",
        kube_emulator_kubeconfig,
        {
            "JOBFERRY_LOG_FORMAT": "json",
            "JOBFERRY_METRICS_PORT": str(free_port()),
        },
    )
    pipeline.env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    pipeline.start_worker(concurrency=2)
    yield pipeline
    pipeline.stop()
    print_logs_if_failed(request, pipeline)


def submit_from_cli(pipeline: Pipeline, workflow_id: str, *env: str) -> None:
    """Submit from another process, as an application would: the producer side of the trace."""
    command = [sys.executable, "-m", "workers", "submit", "--id", workflow_id, "--image", IMAGE]
    for item in env:
        command += ["--env-secret" if ":" in item else "--env", item]
    subprocess.run(
        [*command, "--", "python", "-m", "report"],
        env=pipeline.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )


def finish_job(emulator: KubeEmulator, workflow_id: str, ok: bool, log: str = "") -> None:
    name = job_name(workflow_id)
    code, reason = (0, "Completed") if ok else (3, "Error")
    pod = emulator.add_pod_for_job(
        NS, name, phase="Succeeded" if ok else "Failed", container_state=terminated(code, reason)
    )
    emulator.set_pod_log(NS, pod, log)
    if ok:
        emulator.mark_job_succeeded(NS, name)
    else:
        emulator.mark_job_failed(NS, name)


def checks_of(emulator: KubeEmulator, workflow_id: str) -> int:
    return emulator.count_requests("GET", rf"/jobs/{job_name(workflow_id)}$")


def trace_of(receiver: OtlpReceiver, workflow_id: str) -> list[ReceivedSpan]:
    """Every span of the workflow's trace, once its outcome span has arrived."""

    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.snapshot()
        outcome = [
            s
            for s in spans
            if s.name == "jobferry.outcome" and s.attributes.get("workflow.id") == workflow_id
        ]
        if not outcome:
            return None
        trace_id = outcome[0].trace_id
        return [s for s in spans if s.trace_id == trace_id]

    return wait_for(f"the spans of {workflow_id}", complete, timeout=60, interval=0.3)


def parents(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def depth(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> int:
    level = 0
    while span.parent_id and span.parent_id in by_id:
        span, level = by_id[span.parent_id], level + 1
    return level


def tree(spans: list[ReceivedSpan]) -> str:
    """The trace as an indented outline (printed, so a failing test shows it)."""
    by_id = parents(spans)
    lines: list[str] = []

    def show(parent: str, level: int) -> None:
        for span in spans:
            root = level == 0 and span.parent_id not in by_id
            if span.parent_id == parent or root:
                lines.append(
                    f"{'  ' * level}{span.name} [{span.service}] status={span.status_code}"
                )
                show(span.span_id, level + 1)

    show("", 0)
    return "\n".join(lines)


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name}: {[s.name for s in spans]}"
    return found[0]


def json_log_lines(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [json.loads(line) for line in pipeline.worker_logs().splitlines() if line[:1] == "{"]


def test_one_trace_from_submit_to_outcome(
    observed: Pipeline, kube_emulator: KubeEmulator, receiver: OtlpReceiver
) -> None:
    submit_from_cli(observed, "traced-ok")
    created_job(kube_emulator, "traced-ok", timeout=60)
    # Let a few status checks happen, to see how they hang in the trace.
    wait_for("three status checks", lambda: checks_of(kube_emulator, "traced-ok") >= 3, 60)
    finish_job(kube_emulator, "traced-ok", ok=True, log="done\n")
    assert observed.client.wait("traced-ok", timeout=60).state is OutcomeState.SUCCEEDED

    spans = trace_of(receiver, "traced-ok")
    print(tree(spans))
    by_id = parents(spans)
    submit = one(spans, "jobferry.submit")
    assert (submit.service, submit.parent_id) == ("jobferry-producer", "")
    assert submit.attributes["workflow.id"] == "traced-ok"
    # Exactly one root: every other span hangs under the producer's submit span.
    assert [s.name for s in spans if s.parent_id not in by_id] == ["jobferry.submit"]

    launch = one(spans, "run/jobferry.launch")
    assert launch.service == "jobferry-worker"
    assert by_id[launch.parent_id].name == "apply_async/jobferry.launch"
    create = one(spans, "k8s create jobs")
    assert create.parent_id == launch.span_id
    assert {k: create.attributes[k] for k in WORKFLOW_ATTRIBUTES} == {
        "workflow.id": "traced-ok",
        "k8s.namespace": NS,
        "k8s.container.image": IMAGE,
        "k8s.job.name": job_name("traced-ok"),
    }
    assert create.attributes["http.response.status_code"] == 201

    # Status checks are siblings under the root (the first one follows the launch), never a
    # chain: however many checks ran, the trace stays shallow.
    checks = [s for s in spans if s.name == "run/jobferry.check"]
    assert len(checks) >= 3
    publishers = [by_id[c.parent_id] for c in checks]
    assert {p.name for p in publishers} == {"apply_async/jobferry.check"}
    grandparents = sorted(by_id[p.parent_id].name for p in publishers)
    assert grandparents.count("jobferry.submit") == len(checks) - 1
    assert grandparents.count("run/jobferry.launch") == 1
    assert max(depth(s, by_id) for s in spans) <= 5
    gets = [s for s in spans if s.name == "k8s get jobs"]
    assert gets and {by_id[g.parent_id].name for g in gets} == {"run/jobferry.check"}
    assert all(g.attributes["k8s.job.name"] == job_name("traced-ok") for g in gets)

    outcome = one(spans, "jobferry.outcome")
    assert outcome.attributes["workflow.state"] == "succeeded"
    assert outcome.status_code != STATUS_ERROR

    # The Job's container continues the same trace, under the launch span.
    job = created_job(kube_emulator, "traced-ok", timeout=60)
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    version, trace_id, parent_id, _flags = env["TRACEPARENT"].split("-")
    assert (version, trace_id, parent_id) == ("00", submit.trace_id, launch.span_id)


def test_failed_workflow_error_logs_and_no_secret_anywhere(
    observed: Pipeline, kube_emulator: KubeEmulator, receiver: OtlpReceiver
) -> None:
    submit_from_cli(observed, "traced-bad", f"API_TOKEN={SECRET}", "DB_PASSWORD=db-creds:password")
    job = created_job(kube_emulator, "traced-bad", timeout=60)
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "API_TOKEN", "value": SECRET} in env
    finish_job(kube_emulator, "traced-bad", ok=False, log=f"auth failed with {SECRET}\n")
    outcome = observed.client.wait("traced-bad", timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "BackoffLimitExceeded")

    spans = trace_of(receiver, "traced-bad")
    print(tree(spans))
    failed = one(spans, "jobferry.outcome")
    assert failed.status_code == STATUS_ERROR
    assert failed.status_message == "failed: BackoffLimitExceeded"
    assert [name for name, _ in failed.events] == ["exception"]
    assert "backoff_limit" in failed.events[0][1]["exception.message"]
    # The check that ended it is marked failed too.
    assert by_name_status(spans, "run/jobferry.check") == STATUS_ERROR

    # One JSON line per state change, with ids and the trace they belong to.
    lines = [line for line in json_log_lines(observed) if line.get("workflow_id") == "traced-bad"]
    states = [line["state"] for line in lines]
    assert states[:2] == ["launching", "running"] and states[-1] == "finished"
    last = lines[-1]
    assert (last["outcome"], last["reason"]) == ("failed", "BackoffLimitExceeded")
    assert last["job_name"] == job_name("traced-bad")
    assert last["trace_id"] == failed.trace_id

    # The secret is in the Job (where it belongs) and nowhere an operator looks.
    assert SECRET not in outcome.model_dump_json()
    assert SECRET not in observed.worker_logs()
    assert not [s.name for s in receiver.snapshot() if SECRET in s.text()]
    assert all("db-creds" not in s.text() for s in spans)


def by_name_status(spans: list[ReceivedSpan], name: str) -> int:
    """The status of the last span of that name that has one set (the finishing task)."""
    return max(s.status_code for s in spans if s.name == name)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_real_workflows(observed: Pipeline, kube_emulator: KubeEmulator) -> None:
    port = int(observed.env["JOBFERRY_METRICS_PORT"])
    client = observed.client
    handles = {
        wf: client.submit(WorkflowRequest(workflow_id=wf, image=IMAGE, command=["true"]))
        for wf in ("m-ok-1", "m-ok-2", "m-bad")
    }
    handles["m-lost"] = client.submit(
        WorkflowRequest(workflow_id="m-lost", image=IMAGE, command=["true"], namespace="nowhere")
    )
    for wf in ("m-ok-1", "m-ok-2", "m-bad"):
        created_job(kube_emulator, wf, timeout=60)
    assert handles["m-lost"].wait(timeout=60).state is OutcomeState.REJECTED
    wait_for("a status check", lambda: checks_of(kube_emulator, "m-bad") >= 2, 60)
    samples = scrape(port)
    assert value(samples, "jobferry_workflows_in_flight") == 3

    finish_job(kube_emulator, "m-ok-1", ok=True)
    finish_job(kube_emulator, "m-ok-2", ok=True)
    finish_job(kube_emulator, "m-bad", ok=False)
    outcomes: list[WorkflowOutcome] = [h.wait(timeout=60) for h in handles.values()]
    samples = scrape(port)

    assert value(samples, "jobferry_workflows_submitted_total") == 4
    assert value(samples, "jobferry_workflows_launched_total") == 3
    finished = {
        (labels, v)
        for (name, labels), v in samples.items()
        if name == "jobferry_workflows_finished_total"
    }
    assert finished == {
        ((("reason", "Completed"), ("state", "succeeded")), 2.0),
        ((("reason", "BackoffLimitExceeded"), ("state", "failed")), 1.0),
        ((("reason", "NamespaceNotFound"), ("state", "rejected")), 1.0),
    }
    assert value(samples, "jobferry_workflows_in_flight") == 0
    api = "jobferry_kube_api_requests_total"
    assert value(samples, api, verb="create", resource="jobs", code="201") == 3
    assert value(samples, api, verb="create", resource="jobs", code="404") == 1
    assert value(samples, api, verb="get", resource="jobs", code="200") == sum(
        checks_of(kube_emulator, wf) for wf in ("m-ok-1", "m-ok-2", "m-bad")
    )
    ran = sum(1 for o in outcomes if o.duration_seconds is not None)
    assert ran == 3
    assert value(samples, "jobferry_job_run_seconds_count") == ran
    assert value(samples, "jobferry_job_time_to_running_seconds_count") == ran
    assert value(samples, "jobferry_status_check_lag_seconds_count") >= 1


def test_an_api_error_is_recorded_on_its_span_scrubbed(
    observed: Pipeline, kube_emulator: KubeEmulator, receiver: OtlpReceiver
) -> None:
    # The API server quotes the offending value back: it must not reach the span either.
    message = f'Job.batch "x" is invalid: spec.template.spec.containers[0].env[0].value: "{SECRET}"'
    kube_emulator.fail_next("POST", r"/jobs$", 422, reason="Invalid", message=message)
    submit_from_cli(observed, "traced-invalid", f"API_TOKEN={SECRET}")
    outcome = observed.client.wait("traced-invalid", timeout=60)
    assert (outcome.state, outcome.reason) == (OutcomeState.REJECTED, "Invalid")

    spans = trace_of(receiver, "traced-invalid")
    print(tree(spans))
    create = one(spans, "k8s create jobs")
    assert create.status_code == STATUS_ERROR
    assert create.attributes["http.response.status_code"] == 422
    assert create.attributes["workflow.id"] == "traced-invalid"
    (name, event), *_ = create.events
    assert (name, event["exception.type"]) == ("exception", "Invalid")
    assert "[redacted]" in event["exception.message"]
    assert one(spans, "jobferry.outcome").status_message == "rejected: Invalid"
    assert not [s.name for s in receiver.snapshot() if SECRET in s.text()]
    assert SECRET not in observed.worker_logs()


def test_a_taken_metrics_port_is_logged_and_the_worker_works_on(
    redis_url: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pipeline = make_pipeline(
            redis_url,
            tmp_path / "logs",
            {
                "JOBFERRY_BACKEND": "local",
                "JOBFERRY_LOCAL_STATE_DIR": str(tmp_path / "jobs"),
                "JOBFERRY_METRICS_PORT": str(port),
            },
        )
        pipeline.start_worker()
        try:
            request = WorkflowRequest(workflow_id="unmetered", image="-", command=["true"])
            outcome = pipeline.client.submit(request).wait(timeout=60)
            assert outcome.state is OutcomeState.SUCCEEDED
            wait_for(
                "the log line about the port",
                lambda: f"cannot serve /metrics on port {port}" in pipeline.worker_logs(),
            )
        finally:
            pipeline.stop()


def test_a_cancel_joins_the_workflows_trace(
    observed: Pipeline, kube_emulator: KubeEmulator, receiver: OtlpReceiver
) -> None:
    submit_from_cli(observed, "traced-cancel")
    created_job(kube_emulator, "traced-cancel", timeout=60)
    wait_for("a status check", lambda: checks_of(kube_emulator, "traced-cancel") >= 1, 60)
    subprocess.run(
        [sys.executable, "-m", "workers", "cancel", "traced-cancel"],
        env=observed.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert observed.client.wait("traced-cancel", timeout=60).state is OutcomeState.CANCELLED

    spans = trace_of(receiver, "traced-cancel")
    print(tree(spans))
    by_id = parents(spans)
    submit = one(spans, "jobferry.submit")
    cancel = one(spans, "jobferry.cancel")
    assert (cancel.parent_id, cancel.service) == (submit.span_id, "jobferry-producer")
    run = one(spans, "run/jobferry.cancel")
    assert by_id[run.parent_id].parent_id == cancel.span_id
    # The cancel task or a status check that saw the flag first ends it: either way in this
    # trace, the delete beside the outcome.
    (outcome, *others) = [s for s in spans if s.name == "jobferry.outcome"]
    ender = by_id[outcome.parent_id]
    assert ender.name in ("run/jobferry.cancel", "run/jobferry.check")
    deletes = [s for s in spans if s.name == "k8s delete jobs"]
    assert ender.span_id in {d.parent_id for d in deletes}
    for end in (outcome, *others):
        assert end.attributes["workflow.state"] == "cancelled"
        assert end.status_code != STATUS_ERROR
