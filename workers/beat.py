"""`jobferry beat`: RedBeat's scheduler, plus the periodic workflows of the schedules file.

celery-redbeat keeps the schedule in Redis and holds a Redis lock, so of several beat
processes only one fires; the others wait for the lock and take over when it lapses. That
alone still leaves two ways to fire a slot twice (a holder that stops after submitting but
before recording the run, a lock lost during a long pause), so each slot's workflow id is
derived from the schedule's name and the slot time, and a repeat submission of the same slot is
the identical request under the same id, which `submit` answers with the existing workflow.

Beat submits scheduled workflows itself (through the producer client) instead of sending a
task for a worker to submit: the request never travels in a task message (literal env values
stay out of Flower), only beat needs the schedules file, and the slot is known where it is
computed. A submission is made before the run is recorded, so a beat that dies in between
leaves the slot to be submitted again, harmlessly, by the next holder.

Entries of `app.conf.beat_schedule` that are not schedules (a reconciler, say) are ordinary
RedBeat entries and run as Celery beat runs them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from celery.schedules import crontab
from redbeat.schedulers import RedBeatScheduler, RedBeatSchedulerEntry

from scheduler.client import Jobferry
from scheduler.errors import WorkflowConflictError
from scheduler.schedules import Schedule, load_schedules, slot_after
from scheduler.settings import Settings, load_settings

log = logging.getLogger("jobferry.beat")

SCHEDULED_TASK = "jobferry.scheduled"
ENTRY_PREFIX = "jobferry-schedule:"
SCHEDULES_KEY = "jobferry_schedules"
SETTINGS_KEY = "jobferry_settings"


def beat_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for beat: RedBeat on jobferry's Redis, and its lock."""
    return {
        "beat_scheduler": "workers.beat:JobferryScheduler",
        "redbeat_redis_url": settings.redis_url,
        # Set explicitly, or RedBeat falls back to the broker's options with a warning.
        "redbeat_redis_options": {},
        "redbeat_key_prefix": "jobferry:beat:",
        "redbeat_lock_timeout": settings.beat_lock_timeout_seconds,
        # Beat renews its lock each tick, and a standby tries for it this often.
        "beat_max_loop_interval": max(1, settings.beat_lock_timeout_seconds // 5),
    }


def schedule_entries(schedules: list[Schedule]) -> dict[str, dict[str, Any]]:
    """Beat entries for the schedules; their `schedule` only says when beat should wake."""
    return {
        ENTRY_PREFIX + entry.name: {
            "task": SCHEDULED_TASK,
            "schedule": entry.celery_schedule,
            "args": [entry.name],
        }
        for entry in schedules
    }


def prepare(app: Celery, settings: Settings, schedules: list[Schedule]) -> None:
    """Configure `app` to run beat with these schedules (validated already)."""
    app.conf.update(beat_config(settings))
    app.conf[SETTINGS_KEY] = settings
    app.conf[SCHEDULES_KEY] = {entry.name: entry for entry in schedules}
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **schedule_entries(schedules)}


class JobferryEntry(RedBeatSchedulerEntry):  # type: ignore[misc]
    """A RedBeat entry whose time in Redis is its next slot exactly.

    RedBeat files each entry in Redis under the time it is due, and loads only the entries due
    before the next tick. Its own estimate for an interval counts from the last run; slots are
    on the interval's grid, so a schedule created at 10:30 with `every: 1h` is due at 11:00.
    """

    @property
    def due_at(self) -> datetime | None:
        if self.task != SCHEDULED_TASK or self.last_run_at is None:
            return super().due_at  # type: ignore[no-any-return]
        timing = self.schedule if isinstance(self.schedule, crontab) else self.schedule.seconds
        return slot_after(timing, self.last_run_at)


class JobferryScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat, with schedule entries that submit one workflow per slot."""

    Entry = JobferryEntry

    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        if SCHEDULES_KEY not in app.conf:
            # Started as `celery beat -S workers.beat:JobferryScheduler`, not by `jobferry beat`.
            settings = load_settings()
            path = settings.schedules_file
            prepare(app, settings, load_schedules(Path(path)) if path else [])
        self.schedules: dict[str, Schedule] = app.conf[SCHEDULES_KEY]
        self.client = Jobferry(app.conf[SETTINGS_KEY])
        super().__init__(app, *args, **kwargs)

    def maybe_due(self, entry: Any, **kwargs: Any) -> float | None:
        if entry.task != SCHEDULED_TASK:
            return super().maybe_due(entry, **kwargs)  # type: ignore[no-any-return]
        schedule = self.schedules.get(entry.args[0])
        if schedule is None:
            # An entry left in Redis by a beat that ran another schedules file.
            log.warning("schedule %r is not in this beat's schedules file; skipped", entry.args[0])
            return None
        return self.run_slot(entry, schedule)

    def run_slot(self, entry: Any, schedule: Schedule) -> float:
        """Submit the latest slot not run yet; return seconds until the next slot."""
        now = datetime.now(UTC)
        last: datetime | None = entry.last_run_at
        if last is None:
            # Never run: start counting now, rather than run a slot from before beat knew it.
            entry.reschedule(last_run_at=now)
            return self.seconds_until(schedule.next_slot(now), now)
        last = last.astimezone(UTC)
        slot = schedule.latest_slot(last, now)
        if slot is not None:
            self.submit(schedule, slot)
            # Recorded after the submission: a beat that stops in between leaves the slot to
            # the next holder of the lock, whose submission of the same id is a no-op.
            entry.reschedule(last_run_at=slot)
            last = slot
        return self.seconds_until(schedule.next_slot(last), datetime.now(UTC))

    def submit(self, schedule: Schedule, slot: datetime) -> None:
        request = schedule.request_for(slot)
        try:
            existing = self.client.records.get(request.workflow_id)
            self.client.submit(request)
        # The same slot under a changed schedules file: the first submission stands.
        except WorkflowConflictError as exc:
            log.warning("schedule %s, slot %s: %s", schedule.name, slot.isoformat(), exc)
            return
        verb = "already submitted" if existing is not None else "submitted"
        log.info(
            "schedule %s, slot %s: %s workflow %s",
            schedule.name,
            slot.isoformat(),
            verb,
            request.workflow_id,
        )

    @staticmethod
    def seconds_until(moment: datetime, now: datetime) -> float:
        return max(0.05, (moment - now).total_seconds())
