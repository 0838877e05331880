"""The linters are part of the test suite, so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.services import ROOT, missing

CHECKS = {
    "ruff check": ["ruff", "check", "scheduler", "workers", "tests", "bench"],
    "ruff format": ["ruff", "format", "--check", "scheduler", "workers", "tests", "bench"],
    "mypy --strict": [sys.executable, "-m", "mypy"],
    "import-linter": ["lint-imports"],
}


@pytest.mark.parametrize("command", list(CHECKS.values()), ids=list(CHECKS))
def test_tool_passes(command: list[str]) -> None:
    if shutil.which(command[0]) is None and command[0] != sys.executable:
        missing(f"{command[0]} is not installed (pip install -e '.[dev]')")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
