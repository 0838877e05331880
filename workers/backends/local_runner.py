"""The supervisor behind the `local` backend: runs one Job's command with Job semantics.

It is started detached from the worker (double fork, own session), so a worker that dies or is
restarted does not take the workload with it, and a redelivered launch finds it running. It
retries the command up to the backoff limit, enforces the active deadline over all attempts,
keeps each attempt's output in its own log file, and writes its state to `status.json`
atomically after every change. A lock file makes a second supervisor for the same Job exit.

    python -m workers.backends.local_runner JOB_DIR [--detach]
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

PASSED_THROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    # Missing or being replaced: the caller treats it as "not written yet".
    except (FileNotFoundError, ValueError):
        return None
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class Runner:
    def __init__(self, job_dir: Path) -> None:
        self.dir = job_dir
        self.job: dict[str, Any] = read_json(job_dir / "job.json") or {}
        self.status: dict[str, Any] = read_json(job_dir / "status.json") or {
            "phase": "pending",
            "attempts": 0,
        }
        self.child: subprocess.Popen[bytes] | None = None

    def save(self, **changes: Any) -> None:
        self.status.update(changes, runner_pid=os.getpid())
        write_json(self.dir / "status.json", self.status)

    def run(self) -> None:
        if self.status.get("phase") in ("succeeded", "failed"):
            return
        started = self.status.get("started_at") or now_iso()
        self.save(started_at=started)
        deadline = self.job.get("active_deadline_seconds")
        give_up = datetime.fromisoformat(started).timestamp() + deadline if deadline else None
        limit = int(self.job.get("backoff_limit", 0))
        while int(self.status["attempts"]) <= limit:
            attempt = int(self.status["attempts"]) + 1
            exit_code = self.attempt(attempt, give_up)
            if exit_code is None:
                self.finish(
                    "failed",
                    "DeadlineExceeded",
                    f"Job was active longer than specified deadline ({deadline} s)",
                )
                return
            if exit_code == 0:
                self.finish("succeeded", "Completed", "the Job completed", exit_code=0)
                return
            if attempt <= limit:
                time.sleep(
                    min(float(self.job.get("retry_delay_seconds", 1.0)) * 2 ** (attempt - 1), 10.0)
                )
        self.finish("failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")

    def attempt(self, attempt: int, give_up: float | None) -> int | None:
        """Run one attempt; its exit code, or None when the active deadline passed."""
        log_name = f"attempt-{attempt}.log"
        self.save(phase="running", attempts=attempt, log=log_name, attempt_started_at=now_iso())
        env = {k: os.environ[k] for k in PASSED_THROUGH_ENV if k in os.environ}
        env.update(self.job.get("env", {}))
        with open(self.dir / log_name, "wb") as log:
            try:
                self.child = subprocess.Popen(
                    self.job["command"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=self.dir,
                    start_new_session=True,
                )
            # A missing program is the container runtime's exit 127, not a supervisor crash.
            except OSError as exc:
                log.write(f"cannot start {self.job['command'][0]!r}: {exc}\n".encode())
                self.save(exit_code=127)
                return 127
            self.save(child_pid=self.child.pid)
            timeout = None if give_up is None else max(0.0, give_up - time.time())
            try:
                code = self.child.wait(timeout=timeout)
            # The active deadline covers all attempts; past it the attempt is killed.
            except subprocess.TimeoutExpired:
                self.kill_child()
                return None
        exit_code = 128 - code if code < 0 else code
        self.save(exit_code=exit_code)
        return exit_code

    def finish(self, phase: str, reason: str, message: str, **extra: Any) -> None:
        self.save(phase=phase, reason=reason, message=message, finished_at=now_iso(), **extra)

    def kill_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            # It ended on its own in the meantime.
            except ProcessLookupError:
                pass
            self.child.wait()

    def on_term(self, signum: int, frame: FrameType | None) -> None:
        # No wait() here: the interrupted main loop may hold Popen's wait lock (deadlock).
        if self.child is not None:
            try:
                os.killpg(self.child.pid, signal.SIGKILL)
            # It ended on its own in the meantime.
            except ProcessLookupError:
                pass
        os._exit(0)


def main(argv: list[str]) -> int:
    job_dir = Path(argv[0])
    if "--detach" in argv[1:]:
        if os.fork() > 0:
            return 0
        os.setsid()
    lock = open(job_dir / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # Another supervisor owns this Job (a redelivered launch): leave it to that one.
    except BlockingIOError:
        return 0
    runner = Runner(job_dir)
    signal.signal(signal.SIGTERM, runner.on_term)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
