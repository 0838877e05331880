"""Fast checks (no real binaries) that a failed start explains itself and leaves nothing running.

Fake component binaries are shell scripts, so these run anywhere in about a second.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .controlplane import ControlPlane, ControlPlaneSettings
from .errors import ControlPlaneError
from .processes import group_members

_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def _fake_bin_dir(tmp_path: Path, etcd_script: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in _NAMES:
        script = bin_dir / name
        script.write_text("#!/bin/sh\n" + (etcd_script if name == "etcd" else "exit 1\n"))
        script.chmod(0o755)
    return bin_dir


def _settings(tmp_path: Path, bin_dir: Path, timeout: float) -> ControlPlaneSettings:
    return ControlPlaneSettings(bin_dir=bin_dir, work_dir=tmp_path / "work", start_timeout=timeout)


def test_component_that_exits_fails_start_with_its_log(tmp_path: Path) -> None:
    bin_dir = _fake_bin_dir(tmp_path, 'echo "etcd: disk on fire" >&2\nexit 3\n')
    plane = ControlPlane(_settings(tmp_path, bin_dir, timeout=20))

    with pytest.raises(ControlPlaneError, match="etcd exited") as failure:
        plane.start()

    assert "etcd: disk on fire" in str(failure.value)
    assert (tmp_path / "work" / "logs" / "etcd.log").exists()  # kept for debugging


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # Never healthy, and forks a grandchild that must not survive the stop.
    pid_file = tmp_path / "grandchild.pid"
    bin_dir = _fake_bin_dir(tmp_path, f"sleep 300 &\necho $! > {pid_file}\nexec sleep 300\n")
    plane = ControlPlane(_settings(tmp_path, bin_dir, timeout=1.5))

    with pytest.raises(ControlPlaneError, match="timed out waiting for etcd"):
        plane.start()

    (record,) = plane.records
    assert group_members(record.pid) == []
    grandchild = int(pid_file.read_text())
    assert not Path(f"/proc/{grandchild}").exists() or _is_zombie(grandchild)
    assert os.getpgid(os.getpid()) != record.pid


def _is_zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "Z"
