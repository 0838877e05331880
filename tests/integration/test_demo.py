"""`jobferry demo`, the README's first command, run as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.services import ROOT, missing


@pytest.mark.parametrize("redis", ["fakeredis", "redis-server"])
def test_demo_shows_the_three_outcomes(redis: str) -> None:
    if redis == "redis-server" and shutil.which("redis-server") is None:
        missing("redis-server is not installed (apt-get install redis-server)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFERRY_")}
    result = subprocess.run(
        [sys.executable, "-m", "workers", "demo", "--redis", redis],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ("fakeredis (embedded)" if redis == "fakeredis" else "redis-server (") in out
    rows = {
        line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│ demo-")
    }
    assert "succeeded" in rows["demo-report"] and "report written" in rows["demo-report"]
    assert "BackoffLimitExceeded" in rows["demo-broken-input"]
    assert "│ 3 " in rows["demo-broken-input"]  # exit code 3, after 3 attempts
    assert "deadline_exceeded" in rows["demo-too-slow"]
    assert "All three ended as expected." in out
