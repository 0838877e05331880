"""The `local` backend: each Job is a supervised subprocess on the worker's own host.

For the zero-install demo and for development without a cluster. It runs WHATEVER COMMAND
THE QUEUE CARRIES on this host, as the worker's user, so it runs only when selected by name
(`JOBFERRY_BACKEND=local`). It keeps Kubernetes' Job semantics: the deterministic name,
adoption on redelivery, retries up to the backoff limit, the active deadline, per-attempt logs
and exit codes. It ignores the image, resources and scheduling fields, and cannot resolve
Secret or ConfigMap references (such a request is rejected with a clear reason).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.models import WorkflowRequest
from scheduler.settings import Settings
from workers.backends.base import Conflict, Invalid, JobBackend, JobPhase, JobRef, JobStatus
from workers.backends.classify import parse_time
from workers.backends.local_runner import read_json, write_json
from workers.backends.manifest import job_labels

RUNNER_START_GRACE_SECONDS = 10.0


class LocalBackend(JobBackend):
    name = "local"

    def __init__(self, settings: Settings, retry_delay_seconds: float = 1.0) -> None:
        self._root = settings.local_state_dir
        self._app_label = settings.app_label
        self._retry_delay = retry_delay_seconds

    def job_dir(self, ref: JobRef) -> Path:
        return self._root / ref.namespace / ref.name

    def create(
        self, request: WorkflowRequest, job_name: str, extra_env: dict[str, str] | None = None
    ) -> JobRef:
        ref = JobRef(job_name, request.namespace)
        job_dir = self.job_dir(ref)
        job_dir.parent.mkdir(parents=True, exist_ok=True)
        self._sweep_expired(job_dir.parent)
        try:
            job_dir.mkdir()
        # The name is taken: adopt it if it is this workflow's Job (a redelivered launch).
        except FileExistsError:
            return self._adopt(request, ref)
        now = datetime.now(UTC)
        write_json(job_dir / "job.json", self._job_spec(request, now, extra_env or {}))
        self._spawn(job_dir)
        return JobRef(job_name, request.namespace, now)

    def _job_spec(
        self, request: WorkflowRequest, now: datetime, extra_env: dict[str, str]
    ) -> dict[str, Any]:
        refs = [var.name for var in request.env if var.value is None]
        if refs:
            raise Invalid(
                f"the local backend cannot resolve Secret or ConfigMap references "
                f"(environment variables {refs}); give literal values or use the "
                "kubernetes backend",
                reason="Invalid",
            )
        return {
            "workflow_id": request.workflow_id,
            "labels": job_labels(request, self._app_label),
            "command": [*request.command, *request.args],
            "env": {**{var.name: var.value for var in request.env}, **extra_env},
            "backoff_limit": request.backoff_limit,
            "active_deadline_seconds": request.active_deadline_seconds,
            "ttl_seconds_after_finished": request.ttl_seconds_after_finished,
            "retry_delay_seconds": self._retry_delay,
            "created_at": now.isoformat(),
        }

    def _adopt(self, request: WorkflowRequest, ref: JobRef) -> JobRef:
        spec = self._wait_for_spec(self.job_dir(ref))
        if spec is None or spec.get("workflow_id") != request.workflow_id:
            owner = None if spec is None else spec.get("workflow_id")
            raise Conflict(
                f"local Job {ref.name} already exists and belongs to {owner!r}, not to workflow "
                f"{request.workflow_id!r}; remove {self.job_dir(ref)} or use another id",
                reason="NameConflict",
            )
        if read_json(self.job_dir(ref) / "status.json") is None:
            # The first launch died between writing the spec and starting the supervisor.
            self._spawn(self.job_dir(ref))
        return JobRef(ref.name, ref.namespace, parse_time(spec.get("created_at")), adopted=True)

    @staticmethod
    def _wait_for_spec(job_dir: Path) -> dict[str, Any] | None:
        for _ in range(20):
            spec = read_json(job_dir / "job.json")
            if spec is not None:
                return spec
            time.sleep(0.05)
        return None

    def _spawn(self, job_dir: Path) -> None:
        with open(job_dir / "runner.err", "ab") as errors:
            subprocess.run(
                [sys.executable, "-m", "workers.backends.local_runner", str(job_dir), "--detach"],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                cwd=Path(__file__).resolve().parents[2],
            )

    def get(self, ref: JobRef) -> JobStatus:
        job_dir = self.job_dir(ref)
        spec = read_json(job_dir / "job.json")
        if spec is None:
            return JobStatus(phase=JobPhase.MISSING)
        created = parse_time(spec.get("created_at"))
        status = read_json(job_dir / "status.json")
        if status is None:
            if (
                created
                and (datetime.now(UTC) - created).total_seconds() > RUNNER_START_GRACE_SECONDS
            ):
                self._spawn(job_dir)
            return JobStatus(phase=JobPhase.PENDING, created_at=created)
        phase = JobPhase(status["phase"])
        reason, message = status.get("reason", ""), status.get("message", "")
        if not phase.terminal and not _alive(status.get("runner_pid")):
            phase, reason = JobPhase.FAILED, "RunnerLost"
            message = "the local supervisor process is gone (was the host restarted?)"
        return JobStatus(
            phase=phase,
            reason=reason,
            message=message,
            exit_code=status.get("exit_code"),
            attempts=int(status.get("attempts", 0)),
            created_at=created,
            started_at=parse_time(status.get("started_at")),
            finished_at=parse_time(status.get("finished_at")),
            pod_name=status.get("log"),
        )

    def delete(self, ref: JobRef) -> None:
        job_dir = self.job_dir(ref)
        status = read_json(job_dir / "status.json") or {}
        for key, sig in (("runner_pid", signal.SIGTERM), ("child_pid", signal.SIGKILL)):
            pid = status.get(key)
            if pid and _alive(pid):
                try:
                    os.killpg(int(pid), sig)
                # Exited between the check and the signal.
                except ProcessLookupError:
                    pass
        shutil.rmtree(job_dir, ignore_errors=True)

    def logs(self, ref: JobRef, status: JobStatus, tail_lines: int, limit_bytes: int) -> str:
        if status.pod_name is None or tail_lines == 0:
            return ""
        path = self.job_dir(ref) / status.pod_name
        try:
            data = path.read_bytes()
        # The attempt never started writing, or the Job was deleted meanwhile.
        except FileNotFoundError:
            return ""
        lines = data.splitlines(keepends=True)[-tail_lines:]
        text = b"".join(lines)
        if limit_bytes:
            text = text[-limit_bytes:]
        return text.decode("utf-8", errors="replace")

    def _sweep_expired(self, namespace_dir: Path) -> None:
        """TTL-after-finished: remove finished Jobs whose TTL has passed."""
        now = datetime.now(UTC)
        for job_dir in namespace_dir.iterdir():
            spec = read_json(job_dir / "job.json") or {}
            status = read_json(job_dir / "status.json") or {}
            ttl, finished = (
                spec.get("ttl_seconds_after_finished"),
                parse_time(status.get("finished_at")),
            )
            if ttl is not None and finished and (now - finished).total_seconds() > ttl:
                shutil.rmtree(job_dir, ignore_errors=True)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    # No such process; EPERM would mean it exists under another user.
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
