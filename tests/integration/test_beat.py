"""`jobferry beat` as real processes: two beats, one workflow per slot, and failover.

Two beat processes share one redis-server and a real worker on the local backend. Each
scheduled workflow appends a line to a file when it runs, so a slot run twice would show as
an extra line even if the second submission had somehow got a record of its own.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from redbeat.decoder import RedBeatJSONEncoder

from scheduler import OutcomeState
from scheduler.celeryconfig import make_celery
from scheduler.records import KEY_PREFIX
from scheduler.schedules import Schedule
from scheduler.settings import load_settings
from tests.integration.conftest import Pipeline
from tests.services import CliProcess, wait_for
from workers.beat import JobferryScheduler, prepare

INTERVAL = 2
QUEUE = "jobferry.launch"


def write_schedules(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"schedules": list(entries)}))
    return path


def scheduled_ids(client: redis.Redis, name: str) -> list[str]:
    keys = client.keys(f"{KEY_PREFIX}{name}-*")
    return sorted(key.decode().removeprefix(KEY_PREFIX) for key in keys)


def slot_of(workflow_id: str) -> datetime:
    stamp = workflow_id.rsplit("-", 1)[1]
    fmt = "%Y%m%dT%H%M%S" if len(stamp) == 15 else "%Y%m%dT%H%M"
    return datetime.strptime(stamp, fmt).replace(tzinfo=UTC)


@pytest.fixture
def beats(local_pipeline: Pipeline, request: pytest.FixtureRequest) -> Iterator[list[CliProcess]]:
    started: list[CliProcess] = []
    yield started
    for beat in started:
        beat.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for number, beat in enumerate(started, start=1):
            print(f"--- beat {number} ---\n{beat.log()[-8000:]}")


def start_beat(
    pipeline: Pipeline, beats: list[CliProcess], schedules: Path, **env: str
) -> CliProcess:
    beat_env = {
        **pipeline.env,
        "JOBFERRY_SCHEDULES_FILE": str(schedules),
        "JOBFERRY_BEAT_LOCK_TIMEOUT_SECONDS": "5",
        **env,
    }
    log = pipeline.logs / f"beat-{len(beats) + 1}.log"
    beat = CliProcess(["beat", "-l", "INFO"], beat_env, log).start()
    beats.append(beat)
    return beat


def test_two_beats_start_exactly_one_workflow_per_slot_and_fail_over(
    local_pipeline: Pipeline, beats: list[CliProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.txt"
    schedules = write_schedules(
        tmp_path / "schedules.yaml",
        {
            "name": "tick",
            "every": INTERVAL,
            "request": {"image": "local", "command": ["sh", "-c", f"echo run >> {runs}"]},
        },
    )
    first = start_beat(local_pipeline, beats, schedules)
    second = start_beat(local_pipeline, beats, schedules)

    holder = wait_for(
        "one beat to hold the lock",
        lambda: next((b for b in beats if "Acquired lock" in b.log()), None),
        timeout=60,
    )
    standby = second if holder is first else first
    wait_for("4 slots", lambda: len(scheduled_ids(redis_client, "tick")) >= 4, timeout=90)
    assert "Acquired lock" not in standby.log(), "both beats held the lock at once"

    # Killed, not stopped: it cannot release the lock, which must lapse (5 s) first. Killed
    # just after a submission, while it sleeps: a producer killed between writing a workflow's
    # record and queueing its launch leaves a queued record that only a reconciler repairs.
    submissions = holder.log().count("submitted workflow")
    wait_for(
        "the next submission",
        lambda: holder.log().count("submitted workflow") > submissions,
        timeout=30,
        interval=0.02,
    )
    holder.stop(signal.SIGKILL)
    before_kill = len(scheduled_ids(redis_client, "tick"))
    wait_for("the standby to take the lock", lambda: "Acquired lock" in standby.log(), timeout=60)
    wait_for(
        "3 slots from the standby",
        lambda: len(scheduled_ids(redis_client, "tick")) >= before_kill + 3,
        timeout=90,
    )
    standby.stop()

    ids = scheduled_ids(redis_client, "tick")
    for workflow_id in ids:
        assert local_pipeline.client.wait(workflow_id, timeout=90).state is OutcomeState.SUCCEEDED
    slots = [slot_of(workflow_id) for workflow_id in ids]
    assert all(slot.timestamp() % INTERVAL == 0 for slot in slots), ids
    # Each workflow ran exactly once: one line per workflow, however many beats fired.
    assert runs.read_text().count("run\n") == len(ids)
    # Slots follow each other on the grid; the only gap is the lock lapsing after the kill.
    gaps = [(b - a).total_seconds() for a, b in pairwise(slots)]
    assert sum(gap > INTERVAL for gap in gaps) <= 1, gaps
    assert all(gap <= 30 for gap in gaps), gaps
    submitted = {
        match for beat in beats for match in re.findall(r"submitted workflow (\S+)", beat.log())
    }
    assert submitted == set(ids)


def test_a_slot_submitted_again_is_a_no_op(
    local_pipeline: Pipeline, beats: list[CliProcess], redis_client: redis.Redis, tmp_path: Path
) -> None:
    """A beat that submitted a slot and died before recording it: the next beat repeats it."""
    runs = tmp_path / "runs.txt"
    entry = {
        "name": "hourly",
        "every": "1h",
        "request": {"image": "local", "command": ["sh", "-c", f"echo run >> {runs}"]},
    }
    schedules = write_schedules(tmp_path / "schedules.yaml", entry)
    schedule = Schedule.model_validate(entry)
    now = datetime.now(UTC)
    slot = schedule.latest_slot(now - timedelta(hours=1), now)
    assert slot is not None
    entry_key = "jobferry:beat:jobferry-schedule:hourly"
    first = start_beat(local_pipeline, beats, schedules)
    wait_for("beat to store its entry", lambda: redis_client.exists(entry_key), timeout=60)
    first.stop()
    # What a beat that died mid-slot leaves: the workflow submitted, the run still recorded
    # one slot earlier.
    handle = local_pipeline.client.submit(schedule.request_for(slot))
    meta = json.dumps({"last_run_at": slot - timedelta(hours=1)}, cls=RedBeatJSONEncoder)
    redis_client.hset(entry_key, "meta", meta)

    beat = start_beat(local_pipeline, beats, schedules)
    line = f"already submitted workflow {handle.workflow_id}"
    wait_for("the beat to repeat the slot", lambda: line in beat.log(), timeout=60)
    assert handle.wait(timeout=60).state is OutcomeState.SUCCEEDED
    beat.stop()
    assert beat.log().count(line) == 1, "the repeated slot was not recorded as run"
    assert "Message Error" not in beat.log() and "Traceback" not in beat.log()
    assert scheduled_ids(redis_client, "hourly") == [handle.workflow_id]
    assert runs.read_text() == "run\n"


def test_the_apps_own_beat_entries_run_beside_the_schedules(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """An ordinary `beat_schedule` entry (a reconciler, say) is sent as a task, as Celery does."""
    settings = load_settings(environ={}, redis_url=redis_url)
    app = make_celery(settings)
    app.conf.beat_schedule = {"reconcile": {"task": "jobferry.test-reconcile", "schedule": 1.0}}
    every = {"name": "every", "every": 1, "request": {"image": "local", "command": ["true"]}}
    prepare(app, settings, [Schedule.model_validate(every)])
    scheduler = JobferryScheduler(app=app)
    # The lock is taken by beat's start-up signal, which does not fire for a bare scheduler.
    scheduler.lock_key = None
    try:
        started = time.monotonic()
        while time.monotonic() - started < 4.5:
            time.sleep(min(scheduler.tick(), 0.2))
    finally:
        scheduler.close()
        app.close()
    sent = [json.loads(raw)["headers"]["task"] for raw in redis_client.lrange(QUEUE, 0, -1)]
    assert sent.count("jobferry.test-reconcile") >= 2, sent
    assert len(scheduled_ids(redis_client, "every")) >= 2
