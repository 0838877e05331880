"""`jobferry flower` as a real process, looked at with Debian's headless Chromium.

The worker runs as `jobferry worker` does by default: heartbeats on, task events off until
Flower asks for them. A workflow then runs on it; Flower, with basic auth on, must show the
workflow's outcome task (`jobferry-outcome-<id>`, task `jobferry.check`) as SUCCESS with the
outcome, refuse requests without credentials, and count the tasks in its Prometheus metrics.
The screenshot is kept as `test-artifacts/flower-task.png` (git ignores that directory).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler import OutcomeState, WorkflowRequest
from scheduler.celeryconfig import outcome_task_id
from tests.integration.conftest import Pipeline, make_local_pipeline, print_logs_if_failed
from tests.services import ARTIFACTS, CliProcess, free_port, missing, wait_for

USER, PASSWORD = "ops", "flower-test-Pw-7"


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    # 401 and friends are answers to check, not failures of the request.
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary is not None
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--window-size=1280,1000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def watched_pipeline(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    """The local pipeline, its worker started as in production (heartbeats, no `-E`)."""
    pipeline = make_local_pipeline(redis_url, tmp_path)
    pipeline.start_worker(quiet=False)
    yield pipeline
    pipeline.stop()
    print_logs_if_failed(request, pipeline)


@pytest.fixture
def flower_url(watched_pipeline: Pipeline, request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    env = {**watched_pipeline.env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    flower = CliProcess(
        ["flower", "--port", str(port)], env, watched_pipeline.logs / "flower.log"
    ).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("Flower to answer", lambda: _answers(url), timeout=90, interval=0.5)
        yield url
    finally:
        flower.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- flower ---\n{flower.log()[-8000:]}")
    assert PASSWORD not in flower.log(), "Flower's log shows the password"


def _answers(url: str) -> bool:
    try:
        return get(url + "/healthcheck")[0] == 200
    # Not listening yet.
    except OSError:
        return False


def test_flower_shows_the_outcome_behind_auth_and_counts_tasks(
    watched_pipeline: Pipeline, flower_url: str, tmp_path: Path
) -> None:
    if shutil.which("chromium") is None:
        missing("chromium is not installed (apt-get install chromium)")
    # The worker sends no task events until Flower's periodic `enable_events` reaches it.
    worker = watched_pipeline.workers[0]
    wait_for(
        "Flower to turn the worker's task events on",
        lambda: "Events of group {task} enabled by remote" in worker.log(),
        timeout=60,
        interval=0.5,
    )
    handle = watched_pipeline.client.submit(
        WorkflowRequest(
            workflow_id="flower-1",
            image="local",
            command=["sh", "-c", "echo shown-in-flower"],
        )
    )
    assert handle.wait(timeout=90).state is OutcomeState.SUCCEEDED
    task_id = outcome_task_id("flower-1")
    auth = (USER, PASSWORD)
    wait_for(
        "Flower to see the outcome task succeed with the outcome",
        lambda: all(
            text in get(f"{flower_url}/api/task/info/{task_id}", auth)[1]
            for text in ('"state": "SUCCESS"', "shown-in-flower")
        ),
        timeout=60,
        interval=0.5,
    )

    # No credentials, or wrong ones: refused, pages and API alike.
    for path in ("/", f"/task/{task_id}", "/api/tasks"):
        assert get(flower_url + path)[0] == 401, path
        assert get(flower_url + path, (USER, "wrong"))[0] == 401, path

    page = flower_url.replace("http://", f"http://{USER}:{PASSWORD}@") + f"/task/{task_id}"
    dom = chromium("--dump-dom", page, profile=tmp_path / "chromium").stdout
    assert "jobferry.check" in dom
    assert re.search(r"<span[^>]*>\s*SUCCESS\s*</span>", dom), dom[-3000:]
    assert "'state': 'succeeded'" in dom and "shown-in-flower" in dom, dom[-3000:]

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "flower-task.png"
    screenshot.unlink(missing_ok=True)
    chromium(f"--screenshot={screenshot}", page, profile=tmp_path / "chromium")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"Flower screenshot: {screenshot}")

    status, metrics = get(f"{flower_url}/metrics", auth)
    assert status == 200
    for task in ("jobferry.launch", "jobferry.check"):
        assert _count(metrics, task, "task-succeeded") >= 1, metrics
        assert _count(metrics, task, "task-received") >= 1, metrics


def _count(metrics: str, task: str, event: str) -> float:
    """The sum of flower_events_total over workers for one task name and event type."""
    pattern = re.compile(
        r'^flower_events_total\{(?=[^}]*task="' + re.escape(task) + r'")'
        r'(?=[^}]*type="' + re.escape(event) + r'")[^}]*\} (\S+)$',
        re.MULTILINE,
    )
    return sum(float(value) for value in pattern.findall(metrics))


def test_flower_refuses_to_start_without_auth() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWER_", "JOBFERRY_"))}
    cases = [
        (env, "Flower needs authentication: set FLOWER_BASIC_AUTH=user:password"),
        ({**env, "FLOWER_BASIC_AUTH": "admin-only-Secret9"}, "entry 1 is not user:password"),
    ]
    for case_env, message in cases:
        run = subprocess.run(
            [sys.executable, "-m", "workers", "flower"],
            env=case_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1
        assert message in run.stderr
        assert "Secret9" not in run.stderr + run.stdout
