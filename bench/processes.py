"""The real processes a benchmark run owns: redis-server, `jobferry worker`s, a watcher.

They are the test suite's own (`tests.services`): each `jobferry` process runs in its own
session and is stopped by its process group, so nothing outlives the run. Resident memory
is sampled over each process tree (a prefork worker is a main process plus its pool
children), per process and summed.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.services import CliProcess, RedisServer

MB = 1024 * 1024


class BenchError(RuntimeError):
    """The benchmark could not run (a missing binary, a process that would not start)."""


class Redis(RedisServer):
    """The tests' real redis-server with AOF (as the README recommends), plus its memory."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir)

    def command_calls(self) -> dict[str, int]:
        """Calls per command since the server started (`INFO commandstats`), e.g. `evalsha`."""
        stats = self.client().info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def memory(self) -> dict[str, float]:
        info = self.client().info("memory")
        return {
            "used_memory_peak_mb": round(float(info["used_memory_peak"]) / MB, 1),
            "used_memory_mb": round(float(info["used_memory"]) / MB, 1),
        }


class JobferryProcess(CliProcess):
    """A `jobferry` subcommand of a run (the tests' `CliProcess`), named in reports."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        super().__init__(argv, env, log_path)
        self.name = name


@dataclass
class RssSampler:
    """Samples the resident memory of process trees every `interval` seconds, in a thread."""

    roots: dict[str, int]
    """Name -> pid of each tree's root."""
    interval: float = 1.0
    peak_total_mb: float = 0.0
    peak_total_pss_mb: float = 0.0
    """Peak of the summed PSS: shared pages (a prefork pool's copy-on-write memory) counted
    once across the processes that share them, where RSS counts them in every process."""
    peak_by_tree_mb: dict[str, float] = field(default_factory=dict)
    peak_by_process_mb: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> RssSampler:
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        total = total_pss = 0.0
        for name, pid in self.roots.items():
            tree = 0.0
            try:
                root = psutil.Process(pid)
                processes = [root, *root.children(recursive=True)]
            # The tree is gone (stopped or crashed): nothing to add.
            except psutil.NoSuchProcess:
                continue
            for index, proc in enumerate(processes):
                try:
                    info = proc.memory_full_info()
                    rss = info.rss / MB
                    total_pss += getattr(info, "pss", info.rss) / MB
                # A pool child exited between the listing and the read.
                except psutil.NoSuchProcess:
                    continue
                tree += rss
                key = f"{name}/{'main' if index == 0 else 'child'}"
                self.peak_by_process_mb[key] = max(self.peak_by_process_mb.get(key, 0.0), rss)
            self.peak_by_tree_mb[name] = max(self.peak_by_tree_mb.get(name, 0.0), tree)
            total += tree
        self.peak_total_mb = max(self.peak_total_mb, total)
        self.peak_total_pss_mb = max(self.peak_total_pss_mb, total_pss)


# The control plane's binaries.
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")
# psutil gives the full name from the command line when the kernel's (15 characters) is cut
# short; take either.
_BINARY_OF = {name: binary for binary in CONTROL_PLANE for name in (binary, binary[:15])}


def control_plane_binary(process_name: str | None) -> str | None:
    """Which control-plane binary a process with this name runs; None: not one of them."""
    return _BINARY_OF.get(process_name or "")


@dataclass
class CpuSampler:
    """CPU seconds spent by each part of the machine, sampled every `interval` seconds in a
    thread, so that a window of a phase (the Jobs' creation) can be read afterwards.

    On a machine shared by the client and the control plane a create throughput is a CPU
    budget split between them: this says who spent it.
    """

    roots: dict[str, int]
    """Name -> pid of a process whose children count as its own (a worker's pool)."""
    alone: dict[str, int] = field(default_factory=dict)
    """Name -> pid of a process counted without its children (the benchmark itself, which
    starts the workers and the control plane)."""
    interval: float = 0.25
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> CpuSampler:
        self.sample()
        threading.Thread(target=self._run, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        spent: dict[str, float] = {}
        for name, pid in self.roots.items():
            spent[name] = cpu_seconds(pid, children=True)
        for name, pid in self.alone.items():
            spent[name] = cpu_seconds(pid, children=False)
        for proc in psutil.process_iter(["name", "cpu_times"]):
            binary = control_plane_binary(proc.info["name"])
            times = proc.info["cpu_times"]
            if binary is not None and times is not None:
                spent[binary] = spent.get(binary, 0.0) + times.user + times.system
        machine = psutil.cpu_times()
        spent["machine (busy)"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        self.samples.append((time.time(), spent))

    def window(self, began: float, ended: float) -> dict[str, float]:
        """CPU seconds spent by each part between the samples nearest `began` and `ended`."""
        if not self.samples:
            return {}
        first = min(self.samples, key=lambda s: abs(s[0] - began))
        last = min(self.samples, key=lambda s: abs(s[0] - ended))
        spent = {k: last[1][k] - first[1].get(k, 0.0) for k in last[1]}
        return {"window_s": last[0] - first[0], **spent}


def cpu_seconds(pid: int, children: bool) -> float:
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)] if children else [root]
    # Gone (stopped or crashed): it spends nothing more.
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        # A pool child exited between the listing and the read.
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total
