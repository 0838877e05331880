"""The benchmark (`python -m bench`) still runs, at N=5 on the session's control plane, two
pairs of phases.

Not a performance test: the figures are not judged here (README, "Performance"). It checks
that every phase ran to its end and that the counts it reports are the ones that happened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import markdown
from bench.run import BenchSettings, run_size
from tests.e2e.conftest import E2E

pytestmark = pytest.mark.e2e


def test_the_benchmark_runs_every_phase(e2e: E2E, tmp_path: Path) -> None:
    settings = BenchSettings(
        sizes=(5,),
        duration_s=3,
        launch_concurrency=2,
        status_concurrency=2,
        poll_threads=2,
        idle_s=1,
        timeout_s=240,
        kubeconfig=e2e.cluster.kubeconfig,
        audit_log=e2e.cluster.audit_log,
        out_dir=tmp_path,
        pairs=2,
        warm_up_jobs=2,
        client_warm_up=2,
    )
    result = run_size(5, settings, log=lambda message: None)
    # Two pairs, the second one baseline first; the result is one of them.
    assert [pair["first"] for pair in result["pairs"]] == ["jobferry", "baseline"]
    ratios = [pair["create_throughput_ratio"] for pair in result["pairs"]]
    assert result["create_throughput_ratio"] == min(ratios)
    assert result["jobferry"]["outcomes"] == {"succeeded": 5}
    assert result["baseline"]["outcomes"] == {"succeeded": 5}
    assert result["jobferry"]["latency_s"]["count"] == 5
    assert result["create_throughput_ratio"] > 0
    assert result["worker_rss_mb"] > 0
    assert result["redis_used_memory_peak_mb"] > 0
    # Every workflow's record is a Lua script, and so is each cache write.
    assert result["jobferry"]["redis_calls_per_workflow"]["evalsha"] >= 1
    if e2e.cluster.audit_log is not None:
        # The client warm-up's 2 workflows and 2 Jobs ran before the counts began.
        assert result["jobferry"]["requests"]["client_by_request"]["create jobs"] == 5
        assert result["baseline"]["requests"]["client_by_request"]["create jobs"] == 5
        # 1 create + at least 1 GET per Job, and nothing else, from the baseline.
        assert result["baseline_api_requests_per_workflow"] >= 2
        assert set(result["baseline"]["requests"]["client_by_request"]) == {
            "create jobs",
            "get jobs",
        }
    assert "| N = 5 |" in markdown([result], "python -m bench --n 5")
