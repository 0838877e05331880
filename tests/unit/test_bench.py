"""The benchmark's pure parts, on text captured from a real kube-apiserver (v1.37.2).

data/apiserver-metrics.txt: the `apiserver_request_total` and APF families of `/metrics`
during a benchmark run; data/audit.log: audit events of the worker's and the baseline's
ServiceAccounts. The benchmark itself is not part of the suite (README, "Performance").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import apimetrics
from bench.report import verdict
from bench.stats import percentile, summary

DATA = Path(__file__).parent / "data"
WORKER = "system:serviceaccount:jobferry:jobferry-worker"
BASELINE = "system:serviceaccount:jobferry:bench-baseline"


@pytest.fixture(scope="module")
def scrape() -> apimetrics.Scrape:
    return apimetrics.parse_metrics((DATA / "apiserver-metrics.txt").read_text())


def test_request_totals_are_keyed_by_verb_and_resource(scrape: apimetrics.Scrape) -> None:
    assert scrape.requests["POST jobs"] == 200
    assert scrape.requests["GET jobs"] == 1496
    assert scrape.requests["PUT jobs/status"] == 568
    assert scrape.requests["CONNECT pods/log"] == 100


def test_non_resource_requests_and_other_families_are_left_out(
    scrape: apimetrics.Scrape,
) -> None:
    # /healthz, /readyz, discovery: resource="" (the benchmark's own scrapes land there).
    assert not [key for key in scrape.requests if key.endswith(" ")]
    assert all(" " in key and key.split(" ")[1] for key in scrape.requests)
    # apiserver_request_duration_seconds_count is in the file and must not be added in.
    assert apimetrics.total(scrape) == sum(scrape.requests.values())


def test_service_account_requests_come_from_the_apf_counter(scrape: apimetrics.Scrape) -> None:
    assert scrape.service_account_requests == 2143


def test_delta_keeps_what_changed() -> None:
    before = apimetrics.Scrape({"GET jobs": 10, "POST jobs": 5}, 3)
    after = apimetrics.Scrape({"GET jobs": 25, "POST jobs": 5, "LIST pods": 4}, 20)
    change = apimetrics.delta(before, after)
    assert change.requests == {"GET jobs": 15, "LIST pods": 4}
    assert change.service_account_requests == 17
    assert apimetrics.total(change) == 19


def test_audit_counts_one_user_by_verb_and_resource() -> None:
    lines = (DATA / "audit.log").read_text().splitlines()
    worker = apimetrics.count_audit(lines, WORKER)
    assert worker.by_request == {
        "create jobs": 2,
        "get jobs": 2,
        "get pods/log": 2,
        "list pods": 2,
    }
    assert worker.total == 8
    assert apimetrics.count_audit(lines, BASELINE).total == 4
    assert apimetrics.count_audit(lines, "system:admin").total == 0


def test_audit_counting_starts_at_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    lines = (DATA / "audit.log").read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:6]))
    offset = apimetrics.audit_offset(log)
    with log.open("a") as more:
        more.writelines(lines[6:])
    later = apimetrics.read_audit(log, offset, WORKER)
    assert later is not None
    assert later.total + apimetrics.count_audit(lines[:6], WORKER).total == 8
    # Rotated meanwhile (shorter than the offset): the count is lost, not zero.
    log.write_text(lines[0])
    assert apimetrics.read_audit(log, offset, WORKER) is None


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    assert summary([2.0, 1.0, 4.0, 3.0]) == {
        "count": 4, "min": 1.0, "p50": 2.0, "p95": 4.0, "p99": 4.0, "max": 4.0,
    }  # fmt: skip
    with pytest.raises(ValueError, match="percentile must be in"):
        percentile(values, 0)


def test_goal_verdicts() -> None:
    assert verdict("api_requests_per_workflow", 4.0) == "PASS"
    assert verdict("api_requests_per_workflow", 4.01) == "MISS"
    assert verdict("create_throughput_ratio", 0.79) == "MISS"
    assert verdict("worker_rss_mb", 500.0) == "MISS"
    assert verdict("latency_p95_s", None) == "n/a"
