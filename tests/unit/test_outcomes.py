from __future__ import annotations

from datetime import UTC, datetime

from scheduler.models import EnvVar, OutcomeState, WorkflowRequest, WorkflowState, WorkflowStatus
from workers import outcomes
from workers.backends.base import JobPhase, JobStatus

REQUEST = WorkflowRequest(
    workflow_id="wf",
    image="acme/app:1",
    command=["run"],
    memory_limit="1Gi",
    env=[EnvVar(name="API_TOKEN", value="s3cr3t-token-value"), EnvVar(name="X", value="ab")],
)
RECORD = WorkflowStatus(
    workflow_id="wf",
    state=WorkflowState.RUNNING,
    job_name="jobferry-wf-12345678",
    namespace="default",
    submitted_at=datetime(2026, 12, 4, tzinfo=UTC),
    updated_at=datetime(2026, 12, 4, tzinfo=UTC),
)


def test_literal_env_values_are_scrubbed_from_message_and_log_tail() -> None:
    status = JobStatus(
        phase=JobPhase.FAILED, reason="BackoffLimitExceeded", exit_code=1, attempts=4
    )
    result = outcomes.build(
        RECORD,
        OutcomeState.FAILED,
        "BackoffLimitExceeded",
        "token s3cr3t-token-value refused",
        status,
        log_tail="using token s3cr3t-token-value\nab is short\n",
        secrets=REQUEST.secret_values(),
    )
    dumped = result.model_dump_json()
    assert "s3cr3t-token-value" not in dumped
    assert "[redacted]" in result.message and "[redacted]" in result.log_tail
    assert "ab is short" in result.log_tail  # values under 4 characters are too common to scrub


def test_advice_says_what_to_do() -> None:
    oom = JobStatus(phase=JobPhase.FAILED, reason="OOMKilled", exit_code=137, attempts=4)
    assert "raise memory_limit" in outcomes.advice(oom, REQUEST)
    assert "1Gi" in outcomes.advice(oom, REQUEST)
    backoff = JobStatus(
        phase=JobPhase.FAILED, reason="BackoffLimitExceeded", exit_code=3, attempts=4
    )
    text = outcomes.advice(backoff, REQUEST)
    assert "failed 4 time(s) (last exit code 3)" in text and "backoff_limit=3" in text
    pull = JobStatus(
        phase=JobPhase.PENDING,
        reason="ImagePullBackOff",
        waiting_reason="ImagePullBackOff",
        waiting_message="not found",
    )
    assert "image_pull_secrets" in outcomes.advice(pull, REQUEST)
    assert "'acme/app:1'" in outcomes.advice(pull, REQUEST)


def test_outcome_carries_the_record_and_status_timings() -> None:
    started = datetime(2026, 12, 4, 0, 1, tzinfo=UTC)
    finished = datetime(2026, 12, 4, 0, 3, tzinfo=UTC)
    status = JobStatus(
        phase=JobPhase.SUCCEEDED, exit_code=0, attempts=1, started_at=started, finished_at=finished
    )
    result = outcomes.build(RECORD, OutcomeState.SUCCEEDED, "Completed", "ok", status)
    assert result.job_name == "jobferry-wf-12345678"
    assert result.submitted_at == RECORD.submitted_at
    assert result.duration_seconds == 120.0
    assert result.ok
