"""The Celery configuration producers and workers share, and the names of jobferry's tasks.

Producers send tasks by name with an app built here, so an application that only submits
workflows imports neither the worker code nor the Kubernetes client.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Producer

from scheduler.settings import Settings

LAUNCH_TASK = "jobferry.launch"
CHECK_TASK = "jobferry.check"
CANCEL_TASK = "jobferry.cancel"
RECONCILE_TASK = "jobferry.reconcile"


def outcome_task_id(workflow_id: str) -> str:
    """The Celery task id whose result is the workflow's outcome (shown as such in Flower)."""
    return f"jobferry-outcome-{workflow_id}"


def launch_task_id(workflow_id: str) -> str:
    return f"jobferry-launch-{workflow_id}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for long Jobs on a Redis broker (see README, 'Delivery')."""
    transport = {"visibility_timeout": settings.visibility_timeout_seconds}
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.results_url,
        # JSON only: pickle from a writable Redis is remote code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A task whose worker dies is delivered again instead of being lost.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_deduplicate_successful_tasks": True,
        # celery#7651: the timeout must be the same in all three places.
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "visibility_timeout": settings.visibility_timeout_seconds,
        "broker_connection_retry_on_startup": True,
        "result_expires": settings.outcome_ttl_seconds,
        "result_extended": True,
        "task_track_started": True,
        # Task events cost the workers ~10 % of their CPU in a burst of launches and go
        # nowhere unless a monitor listens: Flower turns them on while it runs (`enable_events`).
        "worker_send_task_events": settings.task_events,
        # A producer's `task-sent` (Flower's "sent" state of a queued launch) is one more
        # Redis round trip per submit, and no monitor can ask a producer for it: it follows
        # the same setting. Queued launches still show as the queue's length in Flower.
        "task_send_sent_event": settings.task_events,
        "task_default_queue": settings.launch_queue,
        "task_routes": {
            LAUNCH_TASK: {"queue": settings.launch_queue},
            CANCEL_TASK: {"queue": settings.launch_queue},
            RECONCILE_TASK: {"queue": settings.launch_queue},
            CHECK_TASK: {"queue": settings.status_queue},
        },
        "worker_hijack_root_logger": False,
        # SIGTERM: running tasks get this long, then they are requeued (see workers/cli.py).
        "worker_soft_shutdown_timeout": settings.soft_shutdown_seconds,
        "enable_utc": True,
    }


def send_launch(
    app: Celery,
    workflow_id: str,
    producer: Producer | None = None,
    check_countdown: float | None = None,
) -> None:
    """Publish a workflow's launch, with its status check chained after it.

    The chain goes in the launch's message, as `(launch | check).apply_async()` would put it,
    but sent directly: Celery's chain drops the `producer` argument (so a publish batch never
    sees it) and clones and freezes both signatures on every submit. The launch stores no
    result (the record says where the workflow is). Without ignore_result, Celery's Redis
    backend subscribes the producer to the launch's result channel at every submit: a
    SUBSCRIBE and later an UNSUBSCRIBE for nothing. `check_countdown` delays the check when
    the launch has run (the worker sets it itself; `bench.floor` gives it here).
    """
    options = {} if check_countdown is None else {"countdown": check_countdown}
    check = app.signature(CHECK_TASK, task_id=outcome_task_id(workflow_id), **options)
    app.send_task(
        LAUNCH_TASK,
        args=[workflow_id],
        task_id=launch_task_id(workflow_id),
        ignore_result=True,
        chain=[check],
        producer=producer,
        retry=False,
    )


def make_celery(settings: Settings, main: str = "jobferry") -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
