"""The schedules file: bad files fail whole with the entry, field and fix; slots and ids."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.errors import RequestError
from scheduler.schedules import Schedule, load_schedules

GOOD_REQUEST = "{image: ghcr.io/acme/report:1.4.2, command: [python, -m, report]}"

BAD_FILES: list[tuple[str, str, str]] = [
    ("not YAML", "schedules: [", "is not valid YAML"),
    ("no schedules key", "jobs: []", "must be a mapping with a list under 'schedules:'"),
    ("schedules not a list", "schedules: {a: 1}", "with a list under 'schedules:'"),
    (
        "no timing",
        f"schedules:\n- name: a\n  request: {GOOD_REQUEST}",
        "schedule 'a': give exactly one of 'cron' (e.g. '0 3 * * *') or 'every'",
    ),
    (
        "cron and every",
        f"schedules:\n- name: a\n  cron: '* * * * *'\n  every: 5\n  request: {GOOD_REQUEST}",
        "schedule 'a': give exactly one of 'cron'",
    ),
    (
        "cron with 6 fields",
        f"schedules:\n- name: a\n  cron: '0 0 3 * * *'\n  request: {GOOD_REQUEST}",
        "schedule 'a' field cron: cron '0 0 3 * * *' has 6 fields; give 5",
    ),
    (
        "cron minute 61",
        f"schedules:\n- name: a\n  cron: '61 * * * *'\n  request: {GOOD_REQUEST}",
        "schedule 'a' field cron: cron '61 * * * *' is not a valid crontab",
    ),
    (
        "cron weekday name",
        f"schedules:\n- name: a\n  cron: '0 3 * * funday'\n  request: {GOOD_REQUEST}",
        "is not a valid crontab",
    ),
    (
        "every with unknown unit",
        f"schedules:\n- name: a\n  every: 5 weeks\n  request: {GOOD_REQUEST}",
        "schedule 'a' field every: every '5 weeks' is not a duration",
    ),
    (
        "every below a second",
        f"schedules:\n- name: a\n  every: 0.5\n  request: {GOOD_REQUEST}",
        "schedule 'a' field every: Input should be greater than or equal to 1",
    ),
    (
        "name with a space",
        f"schedules:\n- name: nightly report\n  every: 60\n  request: {GOOD_REQUEST}",
        "field name: name 'nightly report' may contain only letters, digits",
    ),
    (
        "name too long for the id",
        f"schedules:\n- name: {'n' * 48}\n  every: 60\n  request: {GOOD_REQUEST}",
        "at most 47 are allowed (the workflow id is the name plus '-' and the slot time)",
    ),
    (
        "no name",
        f"schedules:\n- every: 60\n  request: {GOOD_REQUEST}",
        "schedule #1 field name: is required; add it",
    ),
    (
        "misspelt field",
        f"schedules:\n- name: a\n  evry: 60\n  cron: '* * * * *'\n  request: {GOOD_REQUEST}",
        "schedule 'a' field evry: is not a known field",
    ),
    (
        "request with a workflow_id",
        "schedules:\n- name: a\n  every: 60\n"
        "  request: {workflow_id: x, image: busybox, command: [echo]}",
        "schedule 'a' field request: request must not set workflow_id",
    ),
    (
        "request with a bad quantity",
        "schedules:\n- name: a\n  every: 60\n"
        "  request: {image: busybox, command: [echo], memory_limit: 1GB}",
        "schedule 'a' field request: memory_limit '1GB' has an unknown suffix 'GB'",
    ),
    (
        "request with a bad namespace",
        "schedules:\n- name: a\n  every: 60\n"
        "  request: {image: busybox, command: [echo], namespace: Batch}",
        "schedule 'a' field request.namespace: namespace 'Batch' must consist of lowercase",
    ),
    (
        "a YAML boolean where a string belongs",
        "schedules:\n- name: a\n  every: 60\n  request: {image: busybox, command: [true]}",
        "schedule 'a' field request.command.0: Input should be a valid string",
    ),
    (
        "request without an image",
        "schedules:\n- name: a\n  every: 60\n  request: {command: [echo]}",
        "schedule 'a' field request.image: is required; add it",
    ),
    (
        "the same name twice",
        f"schedules:\n- name: a\n  every: 60\n  request: {GOOD_REQUEST}\n"
        f"- name: a\n  every: 120\n  request: {GOOD_REQUEST}",
        "schedule names ['a'] appear more than once",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in BAD_FILES], ids=[n for n, _, _ in BAD_FILES]
)
def test_bad_schedule_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    with pytest.raises(RequestError) as caught:
        load_schedules(path)
    assert expected in str(caught.value)
    assert str(path) in str(caught.value)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "schedules:\n"
        f"- name: ok\n  every: 60\n  request: {GOOD_REQUEST}\n"
        f"- name: bad-cron\n  cron: '* *'\n  request: {GOOD_REQUEST}\n"
        "- name: bad-request\n  every: 5m\n  request: {image: '', command: [x]}\n"
    )
    with pytest.raises(RequestError) as caught:
        load_schedules(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 3, lines
    assert lines[1].startswith("  schedule 'bad-cron' field cron:")
    assert lines[2].startswith("  schedule 'bad-request' field request.image:")


def test_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="JOBFERRY_SCHEDULES_FILE or --schedules"):
        load_schedules(tmp_path / "nope.yaml")


def test_a_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "schedules:\n"
        f"- name: nightly\n  cron: '0 3 * * *'\n  request: {GOOD_REQUEST}\n"
        f"- name: often\n  every: 90s\n  request: {GOOD_REQUEST}\n"
        f"- name: hourly\n  every: 1h\n  request: {GOOD_REQUEST}\n"
    )
    nightly, often, hourly = load_schedules(path)
    assert (often.every, hourly.every) == (90, 3600)
    assert nightly.cron == "0 3 * * *"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def schedule(**timing: object) -> Schedule:
    return Schedule.model_validate(
        {"name": "job", **timing, "request": {"image": "busybox", "command": ["true"]}}
    )


@pytest.mark.parametrize(
    ("timing", "after", "expected"),
    [
        ({"every": "1h"}, "2026-12-04 10:30:00", "2026-12-04 11:00:00"),
        ({"every": "1h"}, "2026-12-04 11:00:00", "2026-12-04 12:00:00"),
        ({"every": 2}, "2026-12-04 10:00:01.5", "2026-12-04 10:00:02"),
        ({"cron": "0 3 * * *"}, "2026-12-04 03:00:00", "2026-12-05 03:00:00"),
        ({"cron": "0 3 * * *"}, "2026-12-04 02:59:59", "2026-12-04 03:00:00"),
        ({"cron": "*/15 * * * *"}, "2026-12-04 10:07:00", "2026-12-04 10:15:00"),
        # 2026-12-04 is a Friday; day-of-week 1 is Monday.
        ({"cron": "30 8 * * 1"}, "2026-12-04 09:00:00", "2026-12-07 08:30:00"),
    ],
)
def test_next_slot(timing: dict[str, object], after: str, expected: str) -> None:
    assert schedule(**timing).next_slot(at(after)) == at(expected)


def test_latest_slot_skips_to_the_most_recent_and_never_repeats() -> None:
    hourly = schedule(every="1h")
    assert hourly.latest_slot(at("2026-12-04 08:00"), at("2026-12-04 11:20")) == at(
        "2026-12-04 11:00"
    )
    assert hourly.latest_slot(at("2026-12-04 11:00"), at("2026-12-04 11:59:59")) is None
    cron = schedule(cron="*/15 * * * *")
    assert cron.latest_slot(at("2026-12-04 08:00"), at("2026-12-04 11:20")) == at(
        "2026-12-04 11:15"
    )
    assert cron.latest_slot(at("2026-12-04 11:15"), at("2026-12-04 11:29")) is None


def test_workflow_id_is_name_and_slot() -> None:
    slot = at("2026-12-04 03:00:00")
    assert schedule(cron="0 3 * * *").workflow_id(slot) == "job-20261204T0300"
    assert schedule(every="5m").workflow_id(slot) == "job-20261204T0300"
    assert schedule(every=2).workflow_id(at("2026-12-04 18:00:02")) == "job-20261204T180002"
    first = schedule(every="5m").request_for(slot)
    again = schedule(every="5m").request_for(slot)
    assert first.workflow_id == "job-20261204T0300"
    assert first.digest() == again.digest()
    long_name = Schedule.model_validate(
        {"name": "n" * 47, "every": 1, "request": {"image": "busybox", "command": ["true"]}}
    )
    assert len(long_name.request_for(at("2026-12-04 18:00:02")).workflow_id) == 63
