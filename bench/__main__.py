"""`python -m bench --n 100 1000 5000`: run the benchmark, write bench/results/latest.*."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from tests.services import ROOT

from .processes import BenchError
from .report import update_readme, write
from .run import BenchSettings, run_size

DEFAULT_OUT = BenchSettings(sizes=()).out_dir


def parse(argv: list[str] | None) -> BenchSettings:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--n",
        type=int,
        nargs="+",
        default=[100, 1000, 5000],
        help="workflow counts, one run each (default: 100 1000 5000)",
    )
    parser.add_argument(
        "--duration",
        type=int,
        help="seconds each Job's pod runs (default: 60, or 60 ms per Job when longer, so that "
        "all N are in flight together: 300 at N=5000)",
    )
    parser.add_argument(
        "--launch-concurrency",
        type=int,
        default=8,
        help="launch worker processes = baseline create threads (default: 8)",
    )
    parser.add_argument(
        "--status-concurrency", type=int, default=8, help="status worker processes (default: 8)"
    )
    parser.add_argument(
        "--pool",
        choices=["prefork", "threads"],
        default="prefork",
        help="Celery pool of both workers (default: prefork; threads: one process each)",
    )
    parser.add_argument(
        "--shared-workers",
        type=int,
        default=0,
        metavar="K",
        help="K identical workers consuming both queues, launch concurrency split among them "
        "(default: 0, a launch worker and a status worker)",
    )
    parser.add_argument(
        "--poll-threads",
        type=int,
        default=16,
        help="threads of the GET-every-2-s baseline poller (default: 16)",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=15.0,
        help="idle window for the background request rate, s (default: 15)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="give up a phase after this many seconds (default: 3600)",
    )
    parser.add_argument(
        "--watcher",
        choices=["auto", "on", "off", "embedded"],
        default="auto",
        help="run `jobferry watcher` (auto: when the command exists; embedded: no watcher "
        "process, the status worker runs `jobferry worker --watch`)",
    )
    parser.add_argument(
        "--split-cpus",
        action="store_true",
        help="the control plane on CPU 0, the bench, workers, Redis and the raw client on the "
        "others, as on a cluster whose API server has its own nodes (default: all share)",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        help="admin kubeconfig of an existing cluster (default: start one per N)",
    )
    parser.add_argument(
        "--audit-log", type=Path, help="that cluster's audit log, for per-client counts"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where latest.json/.md/.png go (default: bench/results)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a JOBFERRY_* setting for the worker processes (repeat), e.g. JOBFERRY_API_QPS=200",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="pairs of phases (jobferry, baseline) per size, alternating which goes first; the "
        "median pair's create ratio is the result (default: 3)",
    )
    parser.add_argument(
        "--pairs-up-to",
        type=int,
        default=5000,
        metavar="N",
        help="sizes above N run one pair (default: 5000)",
    )
    parser.add_argument(
        "--warm-up",
        type=int,
        default=20,
        help="Jobs created and finished on each fresh control plane before its phase (default: 20)",
    )
    parser.add_argument(
        "--client-warm-up",
        type=int,
        default=8,
        metavar="K",
        help="before the clock starts, K workflows (jobferry) or K Jobs (the raw client) of 1 s "
        "run through the side's own client in its namespace and finish; 0: none (default: 8)",
    )
    parser.add_argument(
        "--submit-batch",
        type=int,
        default=100,
        metavar="K",
        help="workflows per Jobferry.submit_many call; 1: one submit each (default: 100)",
    )
    parser.add_argument("--keep", action="store_true", help="keep work dirs (logs)")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs of other sizes already in latest.json (e.g. add N=5000 later)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    return BenchSettings(
        sizes=tuple(args.n),
        duration_s=args.duration,
        launch_concurrency=args.launch_concurrency,
        status_concurrency=args.status_concurrency,
        pool=args.pool,
        shared_workers=args.shared_workers,
        poll_threads=args.poll_threads,
        idle_s=args.idle,
        timeout_s=args.timeout,
        watcher=args.watcher,
        split_cpus=args.split_cpus,
        kubeconfig=args.kubeconfig,
        audit_log=args.audit_log,
        out_dir=args.out,
        keep=args.keep,
        merge=args.merge,
        worker_env=dict(pair(item, parser) for item in args.worker_env),
        pairs=args.pairs,
        pairs_up_to=args.pairs_up_to,
        warm_up_jobs=args.warm_up,
        client_warm_up=args.client_warm_up,
        submit_batch=args.submit_batch,
    )


def pair(item: str, parser: argparse.ArgumentParser) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.startswith("JOBFERRY_"):
        parser.error(f"--worker-env {item!r}: give JOBFERRY_NAME=VALUE")
    return name, value


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    # Stopped by a signal, a run still stops what it started (its `finally` blocks), even
    # when started in the background, where SIGINT is ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    earlier = previous_runs(settings.out_dir) if settings.merge else []
    results: list[dict[str, Any]] = []
    for n in settings.sizes:
        try:
            results.append({**run_size(n, settings, log), "command": command})
        # Known failures: one line, no traceback; the sizes done so far are written.
        except BenchError as exc:
            log(f"bench: error at N={n}: {exc}")
            return 1
        # Written after each size, so a later size that fails or is stopped loses nothing.
        kept = [r for r in earlier if r["n"] not in {x["n"] for x in results}]
        runs = sorted(kept + results, key=lambda r: int(r["n"]))
        write(runs, settings.out_dir, command)
        if settings.out_dir == DEFAULT_OUT:
            update_readme(ROOT / "README.md", runs, command)
        log(f"bench: wrote {settings.out_dir}/latest.json, latest.md, latest.png")
    return 0


def previous_runs(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "latest.json"
    if not path.exists():
        return []
    runs: list[dict[str, Any]] = json.loads(path.read_text()).get("runs", [])
    return runs


if __name__ == "__main__":
    sys.exit(main())
