"""The Celery app `python -m bench.floor` runs: jobferry's Celery set-up, tasks that do nothing.

The same configuration (scheduler.celeryconfig), task names, queues and tracing as jobferry's
workers; a launch that only counts itself, and the chained check that it leaves behind: sent
with its countdown (`FLOOR_SHAPE=chained`) or parked as `workers.tasks` parks it (`parked`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Task, signals

from scheduler.celeryconfig import CHECK_TASK, LAUNCH_TASK, make_celery
from scheduler.records import RecordStore
from scheduler.settings import load_settings
from workers import telemetry

LAUNCHED_KEY = "bench:floor:launched"
GUARD_COUNTDOWN_S = 300.0
"""The wait of the check each launch leaves behind, sent or parked."""
SHAPES = ("chained", "parked")

settings = load_settings()
app = make_celery(settings)
# As workers/app.py: what a worker publishes sends no `task-sent` event.
app.conf.task_send_sent_event = False
_client: redis.Redis | None = None
_records: RecordStore | None = None


@app.task(bind=True, name=LAUNCH_TASK, max_retries=None, track_started=False, ignore_result=True)
def launch(self: Task[Any, Any], workflow_id: str) -> str:
    global _client, _records
    if _client is None:
        _client = redis.Redis.from_url(settings.redis_url)
        _records = RecordStore(_client, settings.outcome_ttl_seconds, settings.app_label)
    _client.incr(LAUNCHED_KEY)
    if os.environ.get("FLOOR_SHAPE") == "parked":
        # As workers.tasks._defer_first_check parks the long wait: one ZADD, no message.
        assert _records is not None
        _records.park_check(workflow_id, time.time() + GUARD_COUNTDOWN_S)
        chain = self.request.chain
        if isinstance(chain, list):
            chain.pop()
    return workflow_id


@app.task(name=CHECK_TASK, max_retries=None, track_started=False)
def check(workflow_id: str) -> None:
    return None


@signals.worker_init.connect
def _trace(**_: Any) -> None:
    # The workers' own set-up: a provider (no exporter) and task spans.
    telemetry.start_worker_process()
