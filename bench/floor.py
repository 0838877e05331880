"""`python -m bench.floor`: what Celery alone costs per workflow, before any jobferry code.

jobferry gives each workflow a launch task with its status check chained after it. This runs
that shape with tasks that do nothing (`bench.floor_app`): a real redis-server, two real
Celery workers with jobferry's configuration, pool and tracing (threads, 4 each, both queues,
as `make bench` runs them), and a producer that sends the launches in kombu publish batches
of 100, as the benchmark's `Jobferry.submit_many` calls of 100 do. Each launch returns at
once and leaves its chained check behind in one of two ways (`--shapes`):

- `chained`: published with a 300 s countdown and held, unacked, by a worker (how jobferry
  sent the watch mode's long first check before `workers.parking`);
- `parked`: taken out of the chain and parked in Redis with one ZADD (how it does now).

It reports the CPU spent per workflow by the workers, Redis and the producer from the first
send until every launch has run and every check is held or parked: the floor under
jobferry's own cost per workflow, with no record, no API budget and no Kubernetes call. Set
beside the raw client's CPU per Job from `make bench` (same machine), it bounds the create
ratio any one-task-per-workflow design can reach where client and API server share the CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from scheduler.celeryconfig import make_celery, send_launch
from scheduler.records import PARKED_KEY
from scheduler.settings import Settings
from tests.services import ROOT

from .floor_app import GUARD_COUNTDOWN_S, LAUNCHED_KEY, SHAPES
from .processes import BenchError, Redis, cpu_seconds

BATCH = 100


def waiting(client: redis.Redis, shape: str) -> int:
    """Checks left behind so far: held by a worker, or parked."""
    return int(client.zcard(PARKED_KEY) if shape == "parked" else client.hlen("unacked"))


def start_worker(settings: Settings, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.floor_app",
        "worker",
        "-P",
        "threads",
        "-c",
        "4",
        "-Q",
        f"{settings.launch_queue},{settings.status_queue}",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "WARNING",
    ]
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def measure(n: int, shape: str, work: Path) -> dict[str, Any]:
    server = Redis(work / "redis")
    server.start()
    env = {**os.environ, "JOBFERRY_REDIS_URL": server.url, "FLOOR_SHAPE": shape}
    settings = Settings(redis_url=server.url)
    # The producer's app sends by name, as Jobferry's does.
    app = make_celery(settings)
    workers = [start_worker(settings, env, work / f"worker-{i}.log") for i in (1, 2)]
    client = redis.Redis.from_url(server.url)
    try:
        deadline = time.monotonic() + 120
        while len(app.control.ping(timeout=1.0) or []) < len(workers):
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise BenchError(f"floor workers did not start; see {work}")
        time.sleep(2)
        assert server.process is not None
        pids = {"workers": [w.pid for w in workers], "redis": [server.process.pid]}
        me = psutil.Process()
        before = {k: sum(cpu_seconds(p, children=True) for p in v) for k, v in pids.items()}
        before["producer"] = sum(me.cpu_times()[:2])
        began = time.monotonic()
        for start in range(0, n, BATCH):
            with app.producer_or_acquire() as producer, producer.batch():
                for index in range(start, min(n, start + BATCH)):
                    send_launch(app, f"floor-{index:05d}", producer, GUARD_COUNTDOWN_S)
        sent = time.monotonic() - began
        deadline = time.monotonic() + 600
        # Every launch ran, and every check is held (unacked) by a worker, or parked.
        while int(client.get(LAUNCHED_KEY) or 0) < n or waiting(client, shape) < n:
            if time.monotonic() > deadline:
                raise BenchError(f"floor run did not finish in 600 s; see {work}")
            time.sleep(0.05)
        elapsed = time.monotonic() - began
        after = {k: sum(cpu_seconds(p, children=True) for p in v) for k, v in pids.items()}
        after["producer"] = sum(me.cpu_times()[:2])
    finally:
        for worker in workers:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        client.close()
        app.close()
        server.stop()
    spent = {k: round((after[k] - before[k]) / n * 1000, 2) for k in after}
    return {
        "n": n,
        "shape": shape,
        "send_s": round(sent, 2),
        "elapsed_s": round(elapsed, 2),
        "workflows_per_s": round(n / elapsed, 1),
        "cpu_ms_per_workflow": {**spent, "total": round(sum(spent.values()), 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="workflows (default: 1000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each shape (default: 3)")
    parser.add_argument(
        "--shapes",
        nargs="+",
        choices=SHAPES,
        default=list(SHAPES),
        help="how the launch leaves its check behind (default: both, alternated)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "floor.json", help="JSON output"
    )
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="jobferry-floor-") as tmp:
        for index in range(args.runs):
            for shape in args.shapes:
                work = Path(tmp) / f"run-{index}-{shape}"
                work.mkdir()
                result = measure(args.n, shape, work)
                print(json.dumps(result), flush=True)
                runs.append(result)
    command = "python -m bench.floor " + " ".join(sys.argv[1:] if argv is None else argv)
    args.out.write_text(json.dumps({"command": command.strip(), "runs": runs}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
