"""The Celery app that workers, beat and Flower run: `celery -A workers.app ...`.

Settings are read once here, at the entry point. Each worker process builds its own job
backend lazily (a Kubernetes client must not cross a prefork fork).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import redis
from celery import signals

from scheduler.celeryconfig import RECONCILE_TASK, make_celery
from scheduler.records import RecordStore
from scheduler.settings import Settings, load_settings
from workers import logconfig, telemetry
from workers.backends import make_backend
from workers.backends.base import JobBackend
from workers.beat import beat_config
from workers.budget import make_budget
from workers.cache import StatusCache
from workers.parking import ReleaseParkedChecks

log = logging.getLogger("jobferry")

settings = load_settings()
app = make_celery(settings)
app.conf.include = ["workers.tasks", "workers.reconcile"]
# What workers publish (a launch's chained first check, retries) is received by a worker
# within milliseconds, countdown or not, so Flower learns nothing from a `task-sent` event,
# which costs a Redis round trip each. Producers send one per launch with JOBFERRY_TASK_EVENTS.
app.conf.task_send_sent_event = False
# Every worker sends the parked status checks that are due (workers/parking.py).
app.steps["worker"].add(ReleaseParkedChecks)
# `celery -A workers.app beat` runs RedBeat too, with the schedules of JOBFERRY_SCHEDULES_FILE.
app.conf.update(beat_config(settings))
# A normal beat entry: any beat (celery beat, or RedBeat's single locked one) runs it.
app.conf.beat_schedule = {
    "jobferry-reconcile": {
        "task": RECONCILE_TASK,
        "schedule": settings.reconcile_interval_seconds,
        # A tick that waits longer than one interval is superseded by the next one.
        "options": {"expires": settings.reconcile_interval_seconds},
    }
}


@dataclass
class WorkerContext:
    """What every task of one worker process shares."""

    settings: Settings
    records: RecordStore
    backend: JobBackend
    cache: StatusCache | None = None
    """The watcher's status cache (kubernetes backend only); None: always ask the backend."""


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def context() -> WorkerContext:
    """This process's context, built once (the threads pool's first tasks race for it)."""
    global _context
    if _context is None:
        with _context_lock:
            if _context is None:
                _context = _build_context()
    return _context


def _build_context() -> WorkerContext:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=15)
    budget = make_budget(
        client, settings.api_qps, settings.api_burst, settings.api_budget_max_wait_seconds
    )
    kubernetes = settings.backend == "kubernetes"
    return WorkerContext(
        settings=settings,
        records=RecordStore(client, settings.outcome_ttl_seconds, settings.app_label),
        backend=make_backend(settings, os.environ, budget),
        cache=StatusCache(client, settings.watch_stale_seconds) if kubernetes else None,
    )


def _prepare_process() -> None:
    """Tracing, and the context built before the first task instead of by it (the backend's
    client configuration and TLS context, the Redis scripts): the first launches after a
    start are not slower than the rest."""
    telemetry.start_worker_process()
    try:
        context()
    # The first task builds it, and reports the error, instead: a pool process that fails
    # to start is only started again, and again.
    except Exception as exc:
        log.warning("worker context not built at start (%s); the first task will try again", exc)


@signals.worker_process_init.connect
def _process_started(**_: Any) -> None:
    _prepare_process()


@signals.worker_init.connect
def _worker_starting(sender: Any, **_: Any) -> None:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = get_implementation(sender.pool_cls)
    # The threads and solo pools run tasks in this process: no worker_process_init comes.
    # A prefork parent builds no context: a Kubernetes client must not cross the fork.
    if not (isinstance(pool, type) and issubclass(pool, PreforkPool)):
        _prepare_process()


@signals.worker_process_shutdown.connect
def _process_stopping(**_: Any) -> None:
    telemetry.stop_worker_process()


@signals.task_postrun.connect
def _task_done(**_: Any) -> None:
    telemetry.leave_workflow()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _logging_set_up(logger: logging.Logger, **_: Any) -> None:
    logconfig.apply(logger, settings.log_format)
