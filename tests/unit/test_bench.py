"""The benchmark's pure parts, on text captured from a real kube-apiserver (v1.37.2).

data/apiserver-metrics.txt: the `apiserver_request_total` and APF families of `/metrics`
during a benchmark run; data/audit.log: audit events of the worker's and the baseline's
ServiceAccounts. The benchmark itself is not part of the suite (README, "Performance").
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench import apimetrics
from bench.processes import CpuSampler
from bench.report import verdict
from bench.run import cpu_section
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


def test_cpu_is_read_over_the_create_window_per_job() -> None:
    sampler = CpuSampler({})
    for at, spent in ((100.0, 1.0), (100.25, 1.5), (100.5, 2.0), (100.75, 2.1)):
        sampler.samples.append((at, {"worker-1": spent, "machine (busy)": 2 * spent}))
    # Nearest samples to the window's ends: 100.25 and 100.5.
    window = sampler.window(began=100.3, ended=100.45)
    assert window == {"window_s": 0.25, "worker-1": 0.5, "machine (busy)": 1.0}
    section = cpu_section(window, 10)
    assert section == {
        "window_s": 0.25,
        "busy_cores": 4.0,
        "ms_per_job": 100.0,
        "ms_per_job_by_process": {"worker-1": 50.0},
    }


def test_cpu_of_a_real_process_tree_grows_with_its_work() -> None:
    sampler = CpuSampler({}, {"bench": os.getpid()})
    sampler.sample()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    sampler.sample()
    spent = sampler.window(sampler.samples[0][0], sampler.samples[-1][0])
    assert spent["bench"] >= 0.25
    assert spent["machine (busy)"] >= spent["bench"] - 0.05
