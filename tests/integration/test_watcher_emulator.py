"""`jobferry watcher` as a real process against the API emulator, with real workers and Redis.

The status checks read the watcher's cache instead of the API server, and the watcher wakes a
check the moment a Job ends or is deleted: outcomes arrive although the regular check loop
waits `JOBFERRY_WATCH_CHECK_INTERVAL_SECONDS` (300 s) between looks, from its first one on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from kubernetes import client, config

from scheduler import OutcomeState, WorkflowRequest
from scheduler.naming import job_name
from scheduler.records import PARKED_KEY
from tests.integration.conftest import (
    Pipeline,
    make_kube_pipeline,
    print_logs_if_failed,
)
from tests.kube_emulator import KubeEmulator
from tests.services import wait_for
from workers import cache

NS = "default"
WATCHED = {
    "JOBFERRY_BACKEND": "kubernetes",
    "JOBFERRY_STARTUP_GRACE_SECONDS": "1",
    "JOBFERRY_WATCH_NAMESPACES": "default",
    "JOBFERRY_WATCH_STALE_SECONDS": "5",
    "JOBFERRY_WATCH_LEASE_SECONDS": "3",
}


def request(workflow_id: str, **fields: object) -> WorkflowRequest:
    return WorkflowRequest(
        workflow_id=workflow_id,
        image="ghcr.io/acme/report:1.4.2",
        command=["python", "-m", "report"],
        **fields,  # type: ignore[arg-type]
    )


def healthy(url: str) -> cache.Health | None:
    client_ = redis.Redis.from_url(url)
    try:
        health = cache.read_health(client_, NS)
    finally:
        client_.close()
    return health if health.ok(5) else None


@pytest.fixture
def watched(
    redis_url: str,
    kube_emulator: KubeEmulator,
    kube_emulator_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Pipeline]:
    pipeline = make_kube_pipeline(redis_url, tmp_path / "logs", kube_emulator_kubeconfig, WATCHED)
    pipeline.start_worker()
    pipeline.start_watcher()
    wait_for("the watcher's first heartbeat", lambda: healthy(redis_url), timeout=60)
    yield pipeline
    pipeline.stop()
    print_logs_if_failed(request, pipeline)


@pytest.fixture
def admin(kube_emulator_kubeconfig: Path) -> Iterator[client.BatchV1Api]:
    api = config.new_client_from_config(str(kube_emulator_kubeconfig))
    yield client.BatchV1Api(api)
    api.close()


def created(emulator: KubeEmulator, workflow_id: str) -> str:
    name = job_name(workflow_id)
    wait_for(f"Job {name} created", lambda: emulator.get_job(NS, name), timeout=30)
    return name


def test_checks_read_the_cache_and_the_end_wakes_them(
    watched: Pipeline, kube_emulator: KubeEmulator, redis_url: str
) -> None:
    handle = watched.client.submit(request("cached"))
    name = created(kube_emulator, "cached")
    pod = kube_emulator.add_pod_for_job(NS, name, phase="Running")
    # The watcher writes the pod's start into the record itself (no task).
    wait_for("the running detail", lambda: "running" in handle.status().detail, timeout=30)
    assert handle.status().detail == "pod running (attempt 1)"
    assert "pod running (attempt 1)" in watched.workers[-1].log()
    # The check chained after the launch waits its long interval parked in Redis: no worker
    # holds it as a countdown message.
    client_ = redis.Redis.from_url(redis_url)
    due = client_.zscore(PARKED_KEY, "jobferry:workflow:cached")
    assert due is not None and 200 < due / 1000 - time.time() <= 300
    assert client_.hlen("unacked") == 0
    kube_emulator.update_pod_status(
        NS,
        pod,
        {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "workflow", "state": {"terminated": {"exitCode": 0}}, "ready": False}
            ],
        },
    )
    kube_emulator.set_pod_log(NS, pod, "all done\n")
    kube_emulator.mark_job_succeeded(NS, name)
    # The regular loop sleeps up to 300 s now; only the watcher's wake-up is this quick.
    outcome = handle.wait(timeout=30)
    assert (outcome.state, outcome.exit_code) == (OutcomeState.SUCCEEDED, 0)
    assert "all done" in outcome.log_tail
    # The check chained after the launch waits its long interval (the cache was fresh), so
    # no regular check has run yet: `last_checked` is still the one written at submit.
    record = redis.Redis.from_url(redis_url).hgetall("jobferry:workflow:cached")
    submitted = datetime.fromisoformat(record[b"submitted_at"].decode()).timestamp()
    assert float(record[b"last_checked"]) == pytest.approx(submitted, abs=0.01)
    # One create and one log read; the status came from the cache. At most one GET: the
    # final evidence when the pods' watch lags the Jobs' (it is a stream apart).
    assert kube_emulator.count_requests("POST", r"/jobs$") == 1
    assert kube_emulator.count_requests("GET", rf"/jobs/{name}$") <= 1
    # The wake-up and a regular check may reach the end at the same moment (the first
    # outcome stored wins): then both read the log.
    assert 1 <= kube_emulator.count_requests("GET", rf"/pods/{pod}/log$") <= 2
    celery_result = watched.client.celery.AsyncResult(f"jobferry-outcome-{'cached'}")
    assert celery_result.get(timeout=10)["state"] == "succeeded"
    # Finished by the wake-up: its parked check is forgotten, it will cost no later task.
    assert client_.zcard(PARKED_KEY) == 0
    client_.close()


def test_a_parked_check_that_comes_due_is_sent_by_a_worker(
    watched: Pipeline, kube_emulator: KubeEmulator, redis_url: str
) -> None:
    handle = watched.client.submit(request("guarded"))
    name = created(kube_emulator, "guarded")
    kube_emulator.add_pod_for_job(NS, name, phase="Running")
    # Its time has come (as if the interval had passed): a worker sends it within a tick, it
    # reads the cache, and parks itself again for another interval.
    due = release_now(redis_url, "guarded")
    assert due - time.time() <= 300
    assert handle.status().state.value == "running"
    # It read the cache, not the API server.
    assert kube_emulator.count_requests("GET", rf"/jobs/{name}$") == 0
    kube_emulator.mark_job_succeeded(NS, name)
    assert handle.wait(timeout=30).state is OutcomeState.SUCCEEDED


def test_job_deleted_by_someone_else(
    watched: Pipeline, kube_emulator: KubeEmulator, admin: client.BatchV1Api
) -> None:
    handle = watched.client.submit(request("deleted"))
    name = created(kube_emulator, "deleted")
    kube_emulator.add_pod_for_job(NS, name, phase="Running")
    wait_for("the running detail", lambda: "running" in handle.status().detail, timeout=30)
    admin.delete_namespaced_job(name, NS, propagation_policy="Background")
    outcome = handle.wait(timeout=30)
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "JobDeleted")
    # The deletion the cache saw was confirmed with one GET before it was believed.
    assert kube_emulator.count_requests("GET", rf"/jobs/{name}$") >= 1


def test_410_gone_relists_and_the_workflow_still_finishes(
    watched: Pipeline, kube_emulator: KubeEmulator, redis_url: str
) -> None:
    handle = watched.client.submit(request("gone"))
    name = created(kube_emulator, "gone")
    wait_for("the Job in the cache", lambda: _cached(redis_url, name), timeout=30)
    watcher = watched.workers[-1]
    watcher.stop()
    # While nobody watches, the Job ends and etcd compacts: the stored version is too old.
    kube_emulator.mark_job_succeeded(NS, name)
    kube_emulator.compact()
    watched.start_watcher()
    outcome = handle.wait(timeout=60)
    assert outcome.state is OutcomeState.SUCCEEDED
    health = wait_for("a healthy watch again", lambda: healthy(redis_url), timeout=30)
    assert health.relists >= 1
    assert "410 Gone" in health.last_error
    assert "listing again" in watched.workers[-1].log()
    status = subprocess.run(
        [sys.executable, "-m", "workers", "watcher", "--health"],
        env=watched.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert f"{NS}: ok" in status.stdout
    assert f"relists {health.relists}" in status.stdout


def test_a_standby_watcher_takes_over_a_dead_ones_namespace(
    watched: Pipeline, kube_emulator: KubeEmulator, redis_url: str
) -> None:
    first = healthy(redis_url)
    assert first is not None
    watched.start_watcher()  # stands by: the lease is taken
    watched.workers[1].stop(signal.SIGKILL)  # the holder dies without a word
    takeover = wait_for(
        "another holder",
        lambda: (h := healthy(redis_url)) and h.holder != first.holder and h,
        timeout=60,
    )
    assert takeover.holder
    handle = watched.client.submit(request("after-takeover"))
    name = created(kube_emulator, "after-takeover")
    kube_emulator.mark_job_failed(NS, name)
    outcome = handle.wait(timeout=30)
    assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "BackoffLimitExceeded")


def release_now(url: str, workflow_id: str) -> float:
    """Make the workflow's parked check due now; wait until a worker has sent it, it ran, and
    it parked itself again. Returns its new due time (epoch seconds)."""
    key = f"jobferry:workflow:{workflow_id}"
    client_ = redis.Redis.from_url(url)
    try:
        wait_for("the parked check", lambda: client_.zscore(PARKED_KEY, key), timeout=30)
        checked = float(client_.hget(key, "last_checked") or 0)
        client_.zadd(PARKED_KEY, {key: int(time.time() * 1000)})
        wait_for(
            "the released check to run",
            lambda: float(client_.hget(key, "last_checked") or 0) > checked,
            timeout=30,
        )
        due = wait_for(
            "the check parked again",
            lambda: (d := client_.zscore(PARKED_KEY, key)) and d / 1000 - time.time() > 200 and d,
            timeout=30,
        )
        return float(due) / 1000
    finally:
        client_.close()


def _cached(url: str, name: str) -> bool:
    client_ = redis.Redis.from_url(url)
    try:
        return bool(client_.hexists(cache.jobs_key(NS), name))
    finally:
        client_.close()


def test_a_threads_worker_can_hold_the_watch_itself(
    redis_url: str,
    kube_emulator: KubeEmulator,
    kube_emulator_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # `jobferry worker --watch`: no watcher process; the worker's own threads hold the lease.
    pipeline = make_kube_pipeline(redis_url, tmp_path / "logs", kube_emulator_kubeconfig, WATCHED)
    worker = pipeline.start_worker(concurrency=4, args=("-P", "threads", "--watch"))
    try:
        health = wait_for("the worker's watch", lambda: healthy(redis_url), timeout=60)
        assert health.holder.split(":")[1] == str(worker.process.pid)  # type: ignore[union-attr]
        handle = pipeline.client.submit(
            WorkflowRequest(workflow_id="in-worker", image="busybox:1.36", command=["true"])
        )
        name = created(kube_emulator, "in-worker")
        kube_emulator.add_pod_for_job(NS, name, phase="Running")
        wait_for("the running detail", lambda: "running" in handle.status().detail, timeout=30)
        # The threads pool's worker releases parked checks too.
        release_now(redis_url, "in-worker")
        kube_emulator.mark_job_failed(NS, name)
        outcome = handle.wait(timeout=30)
        assert (outcome.state, outcome.reason) == (OutcomeState.FAILED, "BackoffLimitExceeded")
    finally:
        pipeline.stop()
        print_logs_if_failed(request, pipeline)
    # Stopped, it let the namespace go: the cache says so at once.
    client_ = redis.Redis.from_url(redis_url)
    assert cache.read_health(client_, NS).fresh is False
    client_.close()


def test_watch_in_a_prefork_worker_is_refused(
    redis_url: str, kube_emulator_kubeconfig: Path, tmp_path: Path
) -> None:
    pipeline = make_kube_pipeline(redis_url, tmp_path / "logs", kube_emulator_kubeconfig, WATCHED)
    command = [sys.executable, "-m", "workers", "worker", "--watch"]
    result = subprocess.run(command, env=pipeline.env, capture_output=True, text=True, timeout=60)
    pipeline.client.close()
    assert result.returncode == 2
    assert "--watch needs -P threads or -P solo (the pool is prefork)" in result.stderr
