from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scheduler import Jobferry, load_settings
from scheduler.naming import job_name
from tests.kube_emulator import KubeEmulator
from tests.services import WatcherProcess, WorkerProcess, wait_for

FAST_CHECKS = {
    "JOBFERRY_STATUS_INTERVAL_SECONDS": "0.3",
    "JOBFERRY_STATUS_INTERVAL_MAX_SECONDS": "1",
    "JOBFERRY_API_RETRY_BASE_SECONDS": "0.2",
    "JOBFERRY_API_RETRY_MAX_SECONDS": "1",
}


@dataclass
class Pipeline:
    """Real worker processes on a real Redis, and a producer client: the whole pipeline."""

    env: dict[str, str]
    logs: Path
    client: Jobferry
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(
        self,
        concurrency: int = 2,
        args: tuple[str, ...] = (),
        quiet: bool = True,
        **extra_env: str,
    ) -> WorkerProcess:
        name = f"worker-{len(self.workers) + 1}.log"
        env = {**self.env, **extra_env}
        worker = WorkerProcess(env, self.logs / name, concurrency, args, quiet)
        self.workers.append(worker.start())
        return worker

    def start_watcher(self, **extra_env: str) -> WorkerProcess:
        """`jobferry watcher` beside the workers (stopped with them)."""
        name = f"watcher-{len(self.workers) + 1}.log"
        watcher = WatcherProcess({**self.env, **extra_env}, self.logs / name)
        self.workers.append(watcher.start())
        return watcher

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.client.close()

    def worker_logs(self) -> str:
        return "\n".join(w.log() for w in self.workers)


def make_pipeline(redis_url: str, logs: Path, settings_env: dict[str, str]) -> Pipeline:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFERRY_")}
    env.pop("KUBECONFIG", None)
    # Port 0: many workers run at once in the tests; those that test /metrics choose a port.
    env.update(
        {
            "JOBFERRY_REDIS_URL": redis_url,
            "JOBFERRY_METRICS_PORT": "0",
            **FAST_CHECKS,
            **settings_env,
        }
    )
    jobferry_env = {k: v for k, v in env.items() if k.startswith("JOBFERRY_")}
    client = Jobferry(load_settings(environ=jobferry_env, **_overrides(jobferry_env)))
    return Pipeline(env=env, logs=logs, client=client)


def make_local_pipeline(redis_url: str, tmp_path: Path) -> Pipeline:
    """`make_pipeline` on the local backend, its Jobs' state under `tmp_path`."""
    return make_pipeline(
        redis_url,
        tmp_path / "logs",
        {"JOBFERRY_BACKEND": "local", "JOBFERRY_LOCAL_STATE_DIR": str(tmp_path / "jobs")},
    )


def make_kube_pipeline(
    redis_url: str, logs: Path, kubeconfig: Path, settings_env: dict[str, str]
) -> Pipeline:
    """`make_pipeline` on the kubernetes backend, talking to the cluster of `kubeconfig`."""
    pipeline = make_pipeline(redis_url, logs, {"JOBFERRY_BACKEND": "kubernetes", **settings_env})
    pipeline.env["KUBECONFIG"] = str(kubeconfig)
    return pipeline


def _overrides(env: dict[str, str]) -> dict[str, object]:
    return {k.removeprefix("JOBFERRY_").lower(): v for k, v in env.items()}


def print_logs_if_failed(request: pytest.FixtureRequest, pipeline: Pipeline) -> None:
    """Show the workers' logs under a failed test: they say what the pipeline did."""
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(pipeline.worker_logs()[-30000:])


def serve(pipeline: Pipeline, request: pytest.FixtureRequest) -> Iterator[Pipeline]:
    """One worker for the duration of a test."""
    pipeline.start_worker()
    yield pipeline
    pipeline.stop()
    print_logs_if_failed(request, pipeline)


@pytest.fixture
def local_pipeline(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    yield from serve(make_local_pipeline(redis_url, tmp_path), request)


@pytest.fixture
def kube_pipeline(
    redis_url: str,
    kube_emulator: KubeEmulator,
    kube_emulator_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Pipeline]:
    """Real workers on the kubernetes backend, talking HTTP to the API emulator."""
    pipeline = make_kube_pipeline(
        redis_url,
        tmp_path / "logs",
        kube_emulator_kubeconfig,
        {"JOBFERRY_STARTUP_GRACE_SECONDS": "1"},
    )
    yield from serve(pipeline, request)


def created_job(emulator: KubeEmulator, workflow_id: str, timeout: float = 30) -> dict[str, Any]:
    """The Job the launch created for `workflow_id` in the emulator's `default` namespace."""
    name = job_name(workflow_id)
    job = wait_for(
        f"Job {name} created", lambda: emulator.get_job("default", name), timeout=timeout
    )
    assert isinstance(job, dict)
    return job


def terminated(code: int, reason: str) -> dict[str, Any]:
    """A container state: ended with `code` and `reason`."""
    return {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": "2026-12-04T10:00:02Z",
            "finishedAt": "2026-12-04T10:00:09Z",
        }
    }
