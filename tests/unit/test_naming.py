from __future__ import annotations

import re

import pytest

from scheduler.naming import job_name

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "workflow_id",
    ["report-2026-12-04", "Report_2026.12.04", "a", "A" * 63, "x.y_z-1", "9" * 63, "a-" * 31 + "a"],
)
def test_job_name_is_a_dns1123_label_of_at_most_63(workflow_id: str) -> None:
    name = job_name(workflow_id)
    assert len(name) <= 63
    assert DNS1123_LABEL.match(name), name
    assert name.startswith("jobferry-")


def test_job_name_is_deterministic_and_readable() -> None:
    assert job_name("report-2026-12-04") == job_name("report-2026-12-04")
    assert job_name("report-2026-12-04").startswith("jobferry-report-2026-12-04-")


def test_ids_that_slug_alike_get_different_names() -> None:
    assert job_name("Report_1") != job_name("report.1")
    assert job_name("a" * 63) != job_name("a" * 62 + "b")


def test_prefix_follows_the_app_label() -> None:
    assert job_name("nightly", prefix="reports").startswith("reports-nightly-")
