"""The Celery app that workers, beat and Flower run: `celery -A workers.app ...`.

Settings are read once here, at the entry point. Each worker process builds its own job
backend lazily (a Kubernetes client must not cross a prefork fork).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import redis

from scheduler.celeryconfig import make_celery
from scheduler.records import RecordStore
from scheduler.settings import Settings, load_settings
from workers.backends import make_backend
from workers.backends.base import JobBackend
from workers.beat import beat_config

log = logging.getLogger("jobferry")

settings = load_settings()
app = make_celery(settings)
app.conf.include = ["workers.tasks"]
# `celery -A workers.app beat` runs RedBeat too, with the schedules of JOBFERRY_SCHEDULES_FILE.
app.conf.update(beat_config(settings))


@dataclass
class WorkerContext:
    """What every task of one worker process shares."""

    settings: Settings
    records: RecordStore
    backend: JobBackend


_context: WorkerContext | None = None


def context() -> WorkerContext:
    global _context
    if _context is None:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=15)
        _context = WorkerContext(
            settings=settings,
            records=RecordStore(client, settings.outcome_ttl_seconds, settings.app_label),
            backend=make_backend(settings, os.environ),
        )
    return _context
