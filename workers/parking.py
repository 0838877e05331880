"""Parked status checks: a check that waits long waits in Redis, not in a worker's memory.

With the watcher's cache fresh, a workflow's regular check comes back only every
`JOBFERRY_WATCH_CHECK_INTERVAL_SECONDS` (the watcher wakes it when the Job ends). Sent as a
Celery countdown, that check would be a message a worker receives at once and holds, unacked,
for minutes: at a launch, publishing and receiving it cost about as much CPU as the launch
task itself (`python -m bench.floor`), 5,000 in flight are 5,000 messages in the workers'
memory, and a worker killed with `kill -9` takes them away until the visibility timeout.

So such a check is parked instead: the workflow's record key in one sorted set
(`scheduler.records.PARKED_KEY`), scored by when the check is due. Every worker releases the
due ones once a second: it claims a batch in one Lua call (a claimed check comes due again
after `CLAIM_HOLD_SECONDS` unless the claimer says it sent it), publishes each as the
workflow's regular check (its task id, its current check epoch, its trace), and then forgets
them. A workflow has one parked check at most, and finishing a workflow forgets it, so a
Job that ended early costs no later check at all.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery, bootsteps
from kombu.exceptions import OperationalError

from scheduler.celeryconfig import CHECK_TASK, outcome_task_id
from scheduler.records import RecordStore
from scheduler.settings import Settings
from workers import telemetry

log = logging.getLogger("jobferry")

PARK_MIN_SECONDS = 10.0
"""Checks due sooner than this are sent with a countdown as before: a release is up to a
tick (`RELEASE_SECONDS`) late, which only a long wait can ignore."""
RELEASE_SECONDS = 1.0
"""How often each worker releases the parked checks that are due."""
RELEASE_BATCH = 500
"""Checks claimed, and published in one batch, at a time."""
RELEASE_ROUNDS = 10
"""Batches one tick releases at most; what is left waits for the next tick."""
CLAIM_HOLD_SECONDS = 60.0
"""A claimed check its claimer did not confirm as sent comes due again after this long."""


def release_due(records: RecordStore, celery: Celery, now: float | None = None) -> int:
    """Publish the parked checks that are due; how many were published."""
    released = 0
    for _ in range(RELEASE_ROUNDS):
        claim, checks = records.claim_parked(RELEASE_BATCH, CLAIM_HOLD_SECONDS, now)
        if not checks:
            break
        live = [check for check in checks if not check.finished]
        with celery.producer_or_acquire() as producer, producer.batch():
            for check in live:
                with telemetry.under_workflow_trace(check.trace_carrier):
                    celery.send_task(
                        CHECK_TASK,
                        args=[check.workflow_id],
                        kwargs={"epoch": check.epoch},
                        task_id=outcome_task_id(check.workflow_id),
                        # Not its first look: a Job the cache does not know is read from the API.
                        retries=1,
                        # Its planned time: the check-lag metric counts the release's delay.
                        eta=datetime.fromtimestamp(check.due, UTC),
                        producer=producer,
                        retry=False,
                    )
        records.parked_sent(claim, [check.workflow_id for check in checks])
        released += len(live)
        if len(checks) < RELEASE_BATCH:
            break
    return released


class Releaser:
    """What a worker's timer calls every second: `release_due`, Redis errors logged."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self._celery = celery
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=15)
        self._records = RecordStore(self._client, settings.outcome_ttl_seconds, settings.app_label)
        self._failing = False

    def __call__(self) -> None:
        try:
            released = release_due(self._records, self._celery)
        # Redis is away: the checks stay parked (claimed ones come due again); retry next tick.
        except (redis.RedisError, OperationalError, OSError) as exc:
            if not self._failing:
                log.warning("parked checks: cannot release them (%s); retrying every second", exc)
            self._failing = True
            return
        if self._failing:
            log.info("parked checks: releasing again")
            self._failing = False
        if released:
            log.debug("parked checks: released %d", released)

    def close(self) -> None:
        self._client.close()


class ReleaseParkedChecks(bootsteps.StartStopStep):
    """A worker bootstep: the worker's timer runs a `Releaser` every `RELEASE_SECONDS`.

    In the worker's main process (its event loop, or the timer thread), never in a prefork
    child, so every worker releases checks whatever its pool and queues.
    """

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._releaser: Releaser | None = None
        self._timer_entry: Any = None

    def start(self, worker: Any) -> None:
        from workers.app import settings

        self._releaser = Releaser(settings, worker.app)
        self._timer_entry = worker.timer.call_repeatedly(RELEASE_SECONDS, self._releaser)

    def stop(self, worker: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
        if self._releaser is not None:
            self._releaser.close()


def due_in(countdown: float) -> float | None:
    """When a check that waits `countdown` s is parked, its due time; None: send it."""
    if countdown < PARK_MIN_SECONDS:
        return None
    return time.time() + countdown
