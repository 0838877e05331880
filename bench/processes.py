"""The real processes a benchmark run owns: redis-server, `jobferry worker`s, a watcher.

Each runs in its own session and is stopped by its process group, so nothing outlives the
run. Resident memory is sampled over each process tree (a prefork worker is a main process
plus its pool children), per process and summed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from tests.services import CliProcess, free_port

MB = 1024 * 1024


class BenchError(RuntimeError):
    """The benchmark could not run (a missing binary, a process that would not start)."""


@dataclass
class Redis:
    """A real redis-server with AOF, as the README recommends for production."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
        ]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        client = self.client()
        for _ in range(400):
            try:
                client.ping()
                return self
            # Still starting.
            except redis.ConnectionError:
                time.sleep(0.025)
        raise BenchError(f"redis-server did not start on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def memory(self) -> dict[str, float]:
        info = self.client().info("memory")
        return {
            "used_memory_peak_mb": round(float(info["used_memory_peak"]) / MB, 1),
            "used_memory_mb": round(float(info["used_memory"]) / MB, 1),
        }

    def stop(self) -> None:
        stop_group(self.process)
        self.process = None


def stop_group(process: subprocess.Popen[bytes] | None, grace: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    # Did not stop in time: nothing of a benchmark may be left running.
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


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
