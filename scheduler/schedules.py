"""Periodic workflows: the schedules file that `jobferry beat` reads, and their slots.

A schedule names a workflow request and when to submit it: `cron` (5 fields, read by Celery's
crontab) or `every` (an interval). Each run belongs to a *slot*, the scheduled time itself,
and the workflow id is derived from the schedule's name and that slot::

    nightly-report-20261204T0300      (cron, or an interval of whole minutes)
    heartbeat-20261204T180002         (an interval with seconds)

So a second submission for the same slot (a second beat, a beat restarted mid-tick) is the
identical request under the same id, which `submit` treats as a repeat, never a new workflow.
Interval slots are multiples of the interval since the Unix epoch (UTC): `every: 1h` runs on
the hour, whenever beat was started.

The whole file is checked before beat starts; an error names the entry, the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from celery import Celery
from celery.schedules import crontab
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scheduler import validation
from scheduler.errors import RequestError
from scheduler.models import WORKFLOW_ID_MAX, WorkflowRequest

SLOT_FORMAT_MINUTES = "%Y%m%dT%H%M"
SLOT_FORMAT_SECONDS = "%Y%m%dT%H%M%S"
NAME_MAX = WORKFLOW_ID_MAX - 1 - len("20261204T180002")
EVERY_MIN_SECONDS = 1
_DURATION = re.compile(r"^\s*(?P<number>\d+(\.\d+)?)\s*(?P<unit>s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Celery's crontab needs an app only for its timezone; jobferry's apps are UTC.
_UTC_APP = Celery("jobferry-schedules", set_as_current=False)
_UTC_APP.conf.update(enable_utc=True, timezone="UTC")


class ScheduledRequest(WorkflowRequest):
    """A workflow request in a schedule: its `workflow_id` is made for each slot."""

    workflow_id: str = "scheduled"

    @model_validator(mode="before")
    @classmethod
    def _no_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and "workflow_id" in data:
            raise ValueError(
                "request must not set workflow_id: it is the schedule's name plus the slot "
                "time; remove it"
            )
        return data


class Schedule(BaseModel):
    """One entry of the schedules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description=f"Unique; 1-{NAME_MAX} of [A-Za-z0-9-_.].")
    cron: str | None = Field(default=None, description="5-field crontab, UTC: '0 3 * * *'.")
    every: Annotated[float, Field(ge=EVERY_MIN_SECONDS)] | None = Field(
        default=None, description="Interval in seconds, or a duration: '30s', '5m', '2h', '1d'."
    )
    request: ScheduledRequest = Field(description="A workflow request without `workflow_id`.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value:
            raise ValueError("name must not be empty")
        if len(value) > NAME_MAX:
            raise ValueError(
                f"name {value!r} is {len(value)} characters; at most {NAME_MAX} are allowed "
                "(the workflow id is the name plus '-' and the slot time)"
            )
        return validation.check_label_value(value, "name")

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: object) -> object:
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match is None:
                raise ValueError(
                    f"every {value!r} is not a duration; give seconds (30) or a number with "
                    "a unit: '30s', '5m', '2h', '1d'"
                )
            return float(match["number"]) * _UNITS[match["unit"]]
        if isinstance(value, bool):
            raise ValueError("every must be a number of seconds or a duration like '5m'")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cron(value)
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> Schedule:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of 'cron' (e.g. '0 3 * * *') or 'every' (e.g. '5m')")
        return self

    @property
    def celery_schedule(self) -> crontab | timedelta:
        """What beat wakes up by (the slots themselves come from `latest_slot`)."""
        if self.cron is not None:
            return parse_cron(self.cron)
        assert self.every is not None
        return timedelta(seconds=self.every)

    def next_slot(self, after: datetime) -> datetime:
        """The first slot strictly after `after`."""
        return slot_after(parse_cron(self.cron) if self.cron else float(self.every or 0), after)

    def latest_slot(self, after: datetime, now: datetime) -> datetime | None:
        """The latest slot in (after, now], or None: missed slots are not run one by one."""
        if self.every is not None:
            slot = datetime.fromtimestamp((now.timestamp() // self.every) * self.every, UTC)
            return slot if slot > after else None
        latest = None
        slot = self.next_slot(after)
        while slot <= now:
            latest = slot
            slot = self.next_slot(slot)
        return latest

    def workflow_id(self, slot: datetime) -> str:
        whole_minutes = self.cron is not None or (self.every or 0) % 60 == 0
        fmt = SLOT_FORMAT_MINUTES if whole_minutes else SLOT_FORMAT_SECONDS
        return f"{self.name}-{slot.astimezone(UTC).strftime(fmt)}"

    def request_for(self, slot: datetime) -> WorkflowRequest:
        """The workflow request of one slot: the same for every submission of that slot."""
        fields = {**self.request.model_dump(), "workflow_id": self.workflow_id(slot)}
        return WorkflowRequest.model_validate(fields)


def slot_after(timing: crontab | float, after: datetime) -> datetime:
    """The first slot strictly after `after` of a crontab, or of an interval in seconds."""
    after = after.astimezone(UTC)
    if isinstance(timing, crontab):
        start, delta, _ = timing.remaining_delta(after, tz=UTC)
        slot: datetime = (start + delta).astimezone(UTC)
        return slot
    return datetime.fromtimestamp((after.timestamp() // timing + 1) * timing, UTC)


def parse_cron(expression: str) -> crontab:
    """A 5-field crontab (minute hour day-of-month month day-of-week), read by Celery.

    Raises:
        ValueError: naming the expression and the expected form.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expression!r} has {len(fields)} fields; give 5: minute hour day-of-month "
            "month day-of-week, e.g. '0 3 * * *' (03:00 UTC daily)"
        )
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(minute, hour, day_of_week, day_of_month, month, app=_UTC_APP)
    # Celery's parser raises its own ParseException or ValueError, both with a cause worth showing.
    except Exception as exc:
        raise ValueError(
            f"cron {expression!r} is not a valid crontab ({exc}); "
            "fields are minute hour day-of-month month day-of-week, e.g. '*/15 * * * 1-5'"
        ) from None


class ScheduleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schedules: list[Schedule]

    @model_validator(mode="after")
    def _unique(self) -> ScheduleFile:
        names = [entry.name for entry in self.schedules]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"schedule names {twice} appear more than once; names must be unique")
        return self


def load_schedules(path: Path) -> list[Schedule]:
    """Read and check a whole schedules file.

    The file is a YAML mapping with one key, `schedules`, a list of entries::

        schedules:
          - name: nightly-report
            cron: "0 3 * * *"
            request: {image: ghcr.io/acme/report:1.4.2, command: [python, -m, report]}

    Raises:
        RequestError: naming the file, each bad entry and field, and what to do.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RequestError(
            f"cannot read schedules file {str(path)!r}: {exc.strerror}; "
            "check JOBFERRY_SCHEDULES_FILE or --schedules"
        ) from None
    # A YAML syntax error: its message has the line and column.
    except yaml.YAMLError as exc:
        raise RequestError(f"schedules file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("schedules"), list):
        raise RequestError(
            f"schedules file {str(path)!r} must be a mapping with a list under 'schedules:', "
            "e.g.\nschedules:\n  - name: nightly\n    cron: '0 3 * * *'\n    request: {...}"
        )
    try:
        return ScheduleFile.model_validate(data).schedules
    except ValidationError as exc:
        raise RequestError(describe_schedule_errors(path, data["schedules"], exc)) from None


def describe_schedule_errors(path: Path, entries: Sequence[Any], exc: ValidationError) -> str:
    """One line per problem: the entry (by name where it has one), the field, the fix."""
    lines = [f"invalid schedules file {str(path)!r}:"]
    for error in exc.errors():
        where = list(_where(entries, error["loc"]))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "is required; add it"
        elif error["type"] == "extra_forbidden":
            message = "is not a known field; check its spelling"
        lines.append(f"  {' '.join(where)}: {message}")
    return "\n".join(lines)


def _where(entries: Sequence[Any], loc: tuple[int | str, ...]) -> Iterator[str]:
    if len(loc) >= 2 and loc[0] == "schedules" and isinstance(loc[1], int):
        index = loc[1]
        entry = entries[index] if index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        yield f"schedule {name!r}" if isinstance(name, str) and name else f"schedule #{index + 1}"
        field = ".".join(str(part) for part in loc[2:])
        if field:
            yield f"field {field}"
    else:
        yield ".".join(str(part) for part in loc) or "file"
