"""Starting component processes and making sure none outlives its control plane.

Each component runs in its own session (so its own process group, pgid == pid): stopping
signals the whole group, which also catches anything a component forked. A process is
identified by pid AND its start time (from /proc), so a recycled pid is never signalled,
even when `down` runs long after `up` in another process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ControlPlaneError

_POLL = 0.1
_STARTTIME = 19  # index of stat field 22 (starttime) in _stat_fields()


@dataclass(frozen=True)
class ProcessRecord:
    """What is needed to find and stop a component later, possibly from another process."""

    name: str
    pid: int
    argv: tuple[str, ...]
    log_path: Path
    start_ticks: int
    """Start time in clock ticks since boot (/proc/<pid>/stat field 22): tells a recycled pid."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "argv": list(self.argv),
            "log_path": str(self.log_path),
            "start_ticks": self.start_ticks,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            argv=tuple(data["argv"]),
            log_path=Path(data["log_path"]),
            start_ticks=int(data["start_ticks"]),
        )


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start `argv` in a new session with stdout+stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=cwd, env=env,
        )  # fmt: skip
    # Our child cannot be reaped before we wait for it, so its /proc entry is there.
    start_ticks = int(_stat_fields(popen.pid)[_STARTTIME])
    return popen, ProcessRecord(name, popen.pid, tuple(argv), log_path, start_ticks)


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded process (same pid, same start time) is alive and not a zombie."""
    try:
        fields = _stat_fields(record.pid)
    # /proc entry gone: the process has exited and been reaped.
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] != "Z" and int(fields[_STARTTIME]) == record.start_ticks


def _pid_reused(record: ProcessRecord) -> bool:
    try:
        return int(_stat_fields(record.pid)[_STARTTIME]) != record.start_ticks
    # No such pid at all: not reused (its group may still have members, though).
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        # Raced with an exiting process.
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_all(
    records: Sequence[ProcessRecord],
    popens: Sequence[subprocess.Popen[bytes]] = (),
    *,
    grace: float = 10.0,
) -> None:
    """Stop the recorded process groups one after the other, in the order given.

    Order matters: stopping etcd before kube-apiserver leaves the apiserver retrying etcd
    until it is killed, so callers pass clients first. Each group gets SIGTERM, then SIGKILL
    after `grace` seconds.

    Raises:
        ControlPlaneError: something in those groups is still alive after SIGKILL.
    """
    for record in records:
        if _pid_reused(record):
            continue  # the leader is gone and its pid now belongs to someone else
        _stop_group(record.pid, popens, grace)
    survivors = {
        r.name: group_members(r.pid) for r in records if not _pid_reused(r) and group_members(r.pid)
    }
    if survivors:
        raise ControlPlaneError(f"processes survived SIGKILL (name: pids): {survivors}")


def _stop_group(pgid: int, popens: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    if not group_members(pgid):
        return
    _signal_groups([pgid], signal.SIGTERM)
    _wait_gone([pgid], popens, deadline=time.monotonic() + grace)
    if group_members(pgid):
        _signal_groups([pgid], signal.SIGKILL)
        _wait_gone([pgid], popens, deadline=time.monotonic() + 5.0)


def _signal_groups(groups: Sequence[int], sig: signal.Signals) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        # Already gone between the check and the signal.
        except ProcessLookupError:
            pass


def _wait_gone(
    groups: Sequence[int], popens: Sequence[subprocess.Popen[bytes]], *, deadline: float
) -> None:
    while time.monotonic() < deadline:
        for popen in popens:
            popen.poll()  # reap our own children so they do not linger as zombies
        if not any(group_members(g) for g in groups):
            return
        time.sleep(_POLL)


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    # No log yet: the process never started writing.
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:])
