"""Parked status checks on a real redis-server, published by a real Celery app onto its queue.

A parked check is claimed by one releaser only, comes due again when its claimer did not send
it, is forgotten once sent unless the check parked itself again meanwhile, and is forgotten
when its workflow finishes. The releaser publishes the workflow's regular check: its task id,
its current check epoch, its trace.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from scheduler.celeryconfig import CHECK_TASK, make_celery, outcome_task_id
from scheduler.models import OutcomeState, WorkflowOutcome, WorkflowRequest
from scheduler.records import PARKED_KEY, RecordStore
from scheduler.settings import Settings
from workers import parking

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def request(workflow_id: str) -> WorkflowRequest:
    return WorkflowRequest(workflow_id=workflow_id, image="busybox:1.36", command=["true"])


@pytest.fixture
def store(redis_client: redis.Redis) -> RecordStore:
    store = RecordStore(redis_client, 3600, "jobferry")
    store.create(request("wf-1"), trace_carrier={"traceparent": TRACEPARENT})
    store.create(request("wf-2"))
    return store


def queued_checks(client: redis.Redis, queue: str = "jobferry.status") -> list[dict[str, Any]]:
    """The check messages on the status queue, decoded as a worker would receive them."""
    messages = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        messages.append({"headers": message["headers"], "args": body[0], "kwargs": body[1]})
    return messages


def test_only_due_checks_are_claimed_and_each_by_one_claimer(store: RecordStore) -> None:
    now = time.time()
    store.park_check("wf-1", now - 1)
    store.park_check("wf-2", now + 300)
    _, checks = store.claim_parked(10, 60, now)
    assert [c.workflow_id for c in checks] == ["wf-1"]
    assert checks[0].due == pytest.approx(now - 1, abs=0.002)
    assert checks[0].trace_carrier == {"traceparent": TRACEPARENT}
    assert not checks[0].finished
    # Claimed: a second releaser finds nothing due, until the claim's hold runs out.
    assert store.claim_parked(10, 60, now)[1] == []
    again = store.claim_parked(10, 60, now + 61)[1]
    assert [c.workflow_id for c in again] == ["wf-1"]
    assert store.parked_count() == 2


def test_a_sent_check_is_forgotten_unless_it_parked_itself_again(store: RecordStore) -> None:
    now = time.time()
    store.park_check("wf-1", now - 1)
    store.park_check("wf-2", now - 1)
    claim, checks = store.claim_parked(10, 60, now)
    assert len(checks) == 2
    # wf-2's check ran before its releaser confirmed the send, and parked itself anew.
    store.park_check("wf-2", now + 300)
    assert store.parked_sent(claim, ["wf-1", "wf-2"]) == 1
    assert store.redis.zrange(PARKED_KEY, 0, -1) == [store.key("wf-2").encode()]


def test_parking_again_moves_the_one_parked_check(store: RecordStore) -> None:
    store.park_check("wf-1", time.time() + 100)
    store.park_check("wf-1", time.time() + 200)
    assert store.parked_count() == 1


def test_finishing_a_workflow_forgets_its_parked_check(store: RecordStore) -> None:
    store.park_check("wf-1", time.time() + 300)
    store.finish(
        WorkflowOutcome(
            workflow_id="wf-1", state=OutcomeState.SUCCEEDED, reason="Completed", message="done"
        )
    )
    assert store.parked_count() == 0


def test_release_publishes_the_regular_check_of_each_live_workflow(
    store: RecordStore, redis_url: str, redis_client: redis.Redis
) -> None:
    celery = make_celery(Settings(redis_url=redis_url))
    now = time.time()
    # wf-1's loop was replaced once by the reconciler: its check carries the new epoch.
    redis_client.hset(store.key("wf-1"), "check_epoch", 1)
    store.park_check("wf-1", now - 2)
    store.park_check("wf-2", now - 1)
    # A record gone (expired): its parked check is dropped, not sent.
    store.park_check("wf-gone", now - 1)
    try:
        assert parking.release_due(store, celery, now) == 2
    finally:
        celery.close()
    messages = queued_checks(redis_client)
    assert [(m["headers"]["task"], m["args"], m["kwargs"]) for m in messages] == [
        (CHECK_TASK, ["wf-1"], {"epoch": 1}),
        (CHECK_TASK, ["wf-2"], {"epoch": 0}),
    ]
    first = messages[0]["headers"]
    assert first["id"] == outcome_task_id("wf-1")
    assert first["retries"] == 1
    assert abs(time.time() - _timestamp(first["eta"]) - 2) < 5
    assert store.parked_count() == 0


def test_a_release_that_cannot_publish_loses_nothing(store: RecordStore, redis_url: str) -> None:
    # The broker is unreachable while the records are not: nothing is sent, nothing forgotten.
    dead = make_celery(Settings(redis_url="redis://127.0.0.1:1/0", result_backend_url=redis_url))
    now = time.time()
    store.park_check("wf-1", now - 1)
    try:
        with pytest.raises(OperationalError):
            parking.release_due(store, dead, now)
    finally:
        dead.close()
    celery = make_celery(Settings(redis_url=redis_url))
    try:
        assert parking.release_due(store, celery, now) == 0
        assert parking.release_due(store, celery, now + parking.CLAIM_HOLD_SECONDS + 1) == 1
    finally:
        celery.close()
    assert store.parked_count() == 0


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture(autouse=True)
def _no_leftover_queue(redis_client: redis.Redis) -> Iterator[None]:
    yield
    redis_client.delete("jobferry.status")


def test_the_metrics_gauge_counts_parked_checks(store: RecordStore) -> None:
    from workers.telemetry import InflightCollector

    store.park_check("wf-1", time.time() + 300)
    store.park_check("wf-2", time.time() + 300)
    gauges = {m.name: m.samples[0].value for m in InflightCollector(store).collect()}
    assert gauges == {"jobferry_workflows_in_flight": 2, "jobferry_status_checks_parked": 2}
