"""`jobferry demo`: the whole pipeline on one machine with nothing installed.

An embedded Redis, a real Celery worker process on the `local` backend, and three workflows:
one succeeds, one fails after its retries, one passes its deadline. Their outcomes are printed
as a table. The exit status is 0 only when each ended as expected.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from scheduler import Jobferry, OutcomeState, WorkflowOutcome, WorkflowRequest
from scheduler.settings import Settings
from workers.embedded import embedded_redis

DEMO_WORKFLOWS = [
    (
        WorkflowRequest(
            workflow_id="demo-report",
            image="local",
            command=["sh", "-c", "echo 'crunching numbers'; sleep 2; echo 'report written'"],
        ),
        OutcomeState.SUCCEEDED,
    ),
    (
        WorkflowRequest(
            workflow_id="demo-broken-input",
            image="local",
            command=[
                "sh",
                "-c",
                "echo 'reading input.csv'; echo 'input.csv: no such file' >&2; exit 3",
            ],
            backoff_limit=2,
        ),
        OutcomeState.FAILED,
    ),
    (
        WorkflowRequest(
            workflow_id="demo-too-slow",
            image="local",
            command=["sh", "-c", "echo 'this will take a while'; sleep 300"],
            deadline_seconds=8,
        ),
        OutcomeState.DEADLINE_EXCEEDED,
    ),
]


def run_demo(console: Console, keep: bool = False, redis: str = "auto") -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="jobferry-demo-"))
    with embedded_redis(redis) as (url, served_by):
        console.print(f"Redis: {served_by} at {url}", highlight=False)
        env = {
            **os.environ,
            "JOBFERRY_REDIS_URL": url,
            "JOBFERRY_BACKEND": "local",
            "JOBFERRY_LOCAL_STATE_DIR": str(state_dir),
            "JOBFERRY_STATUS_INTERVAL_SECONDS": "0.5",
            "JOBFERRY_STATUS_INTERVAL_MAX_SECONDS": "2",
        }
        settings = Settings(
            redis_url=url,
            backend="local",
            local_state_dir=state_dir,
            status_interval_seconds=0.5,
            status_interval_max_seconds=2,
        )
        worker_log = open(state_dir / "worker.log", "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers", "worker", "-c", "3", "-l", "WARNING"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        client = Jobferry(settings)
        try:
            console.print("Worker started (local backend: commands run on this machine).")
            outcomes = _run(console, client)
        finally:
            client.close()
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            worker_log.close()
    console.print(_table(outcomes))
    if keep:
        console.print(f"State and logs kept in {state_dir}")
    else:
        shutil.rmtree(state_dir, ignore_errors=True)
    expected = [state for _, state in DEMO_WORKFLOWS]
    ok = [o.state for o in outcomes] == expected
    console.print("All three ended as expected." if ok else "[red]Unexpected outcomes.[/red]")
    return 0 if ok else 1


def _run(console: Console, client: Jobferry) -> list[WorkflowOutcome]:
    handles = [client.submit(request) for request, _ in DEMO_WORKFLOWS]
    console.print(f"Submitted {', '.join(h.workflow_id for h in handles)}; waiting...")
    started = time.monotonic()
    results = [handle.wait(timeout=120) for handle in handles]
    console.print(f"All finished in {time.monotonic() - started:.1f} s.")
    return results


def _table(outcomes: list[WorkflowOutcome]) -> Table:
    table = Table(title="jobferry demo outcomes")
    for column in ("workflow", "state", "reason", "exit", "attempts", "seconds", "last log line"):
        table.add_column(column)
    for outcome in outcomes:
        duration = outcome.duration_seconds
        last = outcome.log_tail.strip().splitlines()[-1:] or [""]
        table.add_row(
            outcome.workflow_id,
            outcome.state.value,
            outcome.reason,
            "-" if outcome.exit_code is None else str(outcome.exit_code),
            str(outcome.attempts),
            "-" if duration is None else f"{duration:.1f}",
            last[0][:60],
        )
    return table
