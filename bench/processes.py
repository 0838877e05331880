"""The real processes a benchmark run owns: redis-server, `jobferry worker`s, a watcher.

They are the test suite's own (`tests.services`): each `jobferry` process runs in its own
session and is stopped by its process group, so nothing outlives the run. Resident memory
is sampled over each process tree (a prefork worker is a main process plus its pool
children), per process and summed.
"""

from __future__ import annotations

import shutil
import threading
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
