"""The watcher's wake-ups, sent through a real Celery producer to a real redis-server."""

from __future__ import annotations

import json

import redis

from scheduler.celeryconfig import CHECK_TASK
from scheduler.models import WorkflowRequest
from scheduler.records import RecordStore
from scheduler.settings import Settings
from workers.watcher import Waker, waker_celery

STATUS_QUEUE = "jobferry.status"


def queued_checks(client: redis.Redis) -> list[dict[str, object]]:
    return [json.loads(raw)["headers"] for raw in client.lrange(STATUS_QUEUE, 0, -1)]


def test_a_watch_event_wakes_its_workflow_and_a_listing_only_one_in_flight(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = Settings(redis_url=redis_url)
    records = RecordStore(redis_client, 60, settings.app_label)
    records.create(WorkflowRequest(workflow_id="open", image="busybox", command=["true"]))
    waker = Waker(waker_celery(settings), redis_client, records)

    # A listing shows every Job its TTL keeps: a workflow not in flight is left alone.
    waker("gone", "Job Succeeded", listed=True)
    assert queued_checks(redis_client) == []
    waker("open", "Job Succeeded", listed=True)
    # A watch event is news: no lookup, the check is sent.
    waker("gone", "Job Succeeded")
    checks = queued_checks(redis_client)
    assert sorted((str(h["task"]), str(h["argsrepr"])) for h in checks) == [
        (CHECK_TASK, "['gone']"),
        (CHECK_TASK, "['open']"),
    ]
    assert all(str(h["kwargsrepr"]) == "{'wake': True}" for h in checks)
