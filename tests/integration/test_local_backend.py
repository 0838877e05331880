"""The local backend with real subprocesses: Job semantics without a cluster."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scheduler import Settings, WorkflowRequest
from scheduler.naming import job_name
from workers.backends.base import Conflict, Invalid, JobPhase, JobRef, JobStatus
from workers.backends.local import LocalBackend
from workers.backends.local_runner import read_json


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(
        Settings(backend="local", local_state_dir=tmp_path), retry_delay_seconds=0.1
    )


def run(
    backend: LocalBackend, request: WorkflowRequest, timeout: float = 20
) -> tuple[JobRef, JobStatus]:
    ref = backend.create(request, job_name(request.workflow_id))
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        status = backend.get(ref)
        if status.phase.terminal:
            return ref, status
        time.sleep(0.05)
    pytest.fail(f"{request.workflow_id} did not finish in {timeout} s: {backend.get(ref)}")


def test_success_with_log_tail_and_env(backend: LocalBackend) -> None:
    request = WorkflowRequest(
        workflow_id="ok",
        image="local",
        command=["sh", "-c"],
        args=['for i in 1 2 3 4 5; do echo "line $i $GREETING"; done'],
        env=[{"name": "GREETING", "value": "hello"}],  # type: ignore[list-item]
    )
    ref, status = run(backend, request)
    assert status.phase is JobPhase.SUCCEEDED
    assert status.exit_code == 0 and status.attempts == 1
    assert status.started_at is not None and status.finished_at is not None
    assert backend.logs(ref, status, tail_lines=2, limit_bytes=0) == (
        "line 4 hello\nline 5 hello\n"
    )


def test_worker_environment_does_not_leak_into_the_job(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBFERRY_REDIS_URL", "redis://:hunter22@redis:6379/0")
    request = WorkflowRequest(workflow_id="env", image="local", command=["env"])
    ref, status = run(backend, request)
    assert "hunter22" not in backend.logs(ref, status, 100, 0)


def test_failure_is_retried_up_to_the_backoff_limit(backend: LocalBackend) -> None:
    request = WorkflowRequest(
        workflow_id="bad",
        image="local",
        command=["sh", "-c", "echo attempt; exit 7"],
        backoff_limit=2,
    )
    ref, status = run(backend, request)
    assert status.phase is JobPhase.FAILED
    assert status.reason == "BackoffLimitExceeded"
    assert status.attempts == 3
    assert status.exit_code == 7
    assert backend.logs(ref, status, 10, 0) == "attempt\n"


def test_active_deadline_kills_the_attempt(backend: LocalBackend) -> None:
    request = WorkflowRequest(
        workflow_id="slow", image="local", command=["sleep", "60"], active_deadline_seconds=1
    )
    started = time.monotonic()
    _, status = run(backend, request)
    assert status.phase is JobPhase.FAILED and status.reason == "DeadlineExceeded"
    assert time.monotonic() - started < 10


def test_missing_program_is_exit_127(backend: LocalBackend) -> None:
    request = WorkflowRequest(
        workflow_id="nope", image="local", command=["/no/such/program"], backoff_limit=0
    )
    ref, status = run(backend, request)
    assert status.exit_code == 127
    assert "cannot start" in backend.logs(ref, status, 10, 0)


def test_redelivered_create_adopts_and_foreign_name_is_refused(backend: LocalBackend) -> None:
    request = WorkflowRequest(workflow_id="twice", image="local", command=["sleep", "1"])
    name = job_name("twice")
    first = backend.create(request, name)
    second = backend.create(request, name)
    assert not first.adopted and second.adopted
    other = WorkflowRequest(workflow_id="other", image="local", command=["true"])
    with pytest.raises(Conflict, match="belongs to 'twice'"):
        backend.create(other, name)


def test_delete_stops_the_process_and_the_job_is_missing(backend: LocalBackend) -> None:
    request = WorkflowRequest(workflow_id="gone", image="local", command=["sleep", "60"])
    ref = backend.create(request, job_name("gone"))
    deadline = time.monotonic() + 10
    while backend.get(ref).phase is not JobPhase.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    status_file = read_json(backend.job_dir(ref) / "status.json")
    assert status_file is not None
    pids = [int(status_file["child_pid"]), int(status_file["runner_pid"])]
    backend.delete(ref)
    assert backend.get(ref).phase is JobPhase.MISSING
    for pid in pids:
        deadline = time.monotonic() + 5
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(pid), f"process {pid} survived the delete"


def running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2] != "Z"
    # Gone entirely (ESRCH while the kernel reaps it).
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_secret_references_are_refused(backend: LocalBackend) -> None:
    request = WorkflowRequest(
        workflow_id="secret",
        image="local",
        command=["true"],
        env=[{"name": "T", "secret_key_ref": {"name": "s", "key": "k"}}],  # type: ignore[list-item]
    )
    with pytest.raises(Invalid, match="cannot resolve Secret or ConfigMap"):
        backend.create(request, job_name("secret"))
