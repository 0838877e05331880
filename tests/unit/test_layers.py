"""An application that only submits needs neither the worker code nor the Kubernetes client."""

from __future__ import annotations

import subprocess
import sys

from tests.services import ROOT


def test_importing_the_producer_side_loads_no_worker_or_kubernetes_module() -> None:
    code = (
        "import sys, scheduler\n"
        "from scheduler import WorkflowRequest, submit, Jobferry\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('workers', 'kubernetes'))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"
