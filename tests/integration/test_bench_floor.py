"""`python -m bench.floor` still runs: two real Celery workers, a real redis-server, N=100.

Not a performance test: the figures are not judged (README, "Performance"). It checks that
every launch ran, every chained check is held or parked (one shape each), and that the CPU it
reports was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import floor


def test_the_floor_runs_each_launch_and_holds_or_parks_each_check(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    assert floor.main(["--n", "100", "--runs", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["command"] == "python -m bench.floor --n 100 --runs 1 --out " + str(out)
    # A run ends only when every check is held (unacked) or parked, as its shape says.
    assert [run["shape"] for run in report["runs"]] == ["chained", "parked"]
    for run in report["runs"]:
        assert run["n"] == 100
        spent = run["cpu_ms_per_workflow"]
        assert spent["workers"] > 0 and spent["redis"] > 0 and spent["producer"] > 0
        parts = spent["workers"] + spent["redis"] + spent["producer"]
        assert abs(spent["total"] - parts) < 0.02
