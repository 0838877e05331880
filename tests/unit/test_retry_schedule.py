from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from scheduler.models import WorkflowState, WorkflowStatus
from scheduler.settings import Settings
from workers.app import WorkerContext
from workers.tasks import GUARD_JITTER, _interval, backoff


def test_backoff_is_jittered_below_an_exponential_cap() -> None:
    random.seed(7)
    for attempt in range(12):
        ceiling = min(60.0, 1.0 * 2**attempt)
        delays = [backoff(attempt, 1.0, 60.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
        assert min(delays) < ceiling * 0.2


def test_retry_after_from_the_server_is_a_floor() -> None:
    assert all(backoff(0, 1.0, 60.0, hint=5.0) >= 5.0 for _ in range(100))


def test_the_guard_interval_is_jittered_below_its_setting() -> None:
    # A burst of launches must not come back as a burst of guard checks one interval later.
    settings = Settings(watch_check_interval_seconds=300)
    ctx = WorkerContext(settings=settings, records=cast(Any, None), backend=cast(Any, None))
    now = datetime.now(UTC)
    record = WorkflowStatus(
        workflow_id="wf",
        state=WorkflowState.RUNNING,
        job_name="jobferry-wf",
        namespace="default",
        submitted_at=now,
        updated_at=now,
        deadline_at=now + timedelta(hours=1),
    )
    random.seed(7)
    intervals = [_interval(ctx, 0, record, cached=True) for _ in range(200)]
    assert all(300 * (1 - GUARD_JITTER) <= i <= 300 for i in intervals)
    assert max(intervals) - min(intervals) > 300 * GUARD_JITTER * 0.8
    # Never past the deadline, jitter or not.
    record = record.model_copy(update={"deadline_at": now + timedelta(seconds=10)})
    assert all(_interval(ctx, 0, record, cached=True) <= 10.1 for _ in range(50))
