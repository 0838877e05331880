"""`python -m tests.k8senv build|up|down|status`: the control plane by hand.

    eval "$(python -m tests.k8senv up)"   # start detached; prints export KUBECONFIG=...
    kubectl get nodes
    K8SENV_KUBECONFIG=$KUBECONFIG pytest -m e2e   # tests reuse it instead of starting one
    python -m tests.k8senv down           # stop everything, verify nothing is left

State lives in ${XDG_RUNTIME_DIR:-/tmp}/jobferry-k8senv/ (override: --state-dir or
K8SENV_STATE). Progress goes to stderr; only `up`'s export line goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import binaries
from .controlplane import ControlPlane, ControlPlaneSettings
from .errors import K8sEnvError, StateError
from .processes import group_members, is_running


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def cmd_build(_: argparse.Namespace) -> int:
    began = time.monotonic()
    bin_dir = binaries.build()
    _info(f"binaries ready in {bin_dir} ({time.monotonic() - began:.0f}s)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    state_file = _state_file(args.state_dir)
    if state_file.exists():
        plane = ControlPlane.from_state(state_file)
        if all(is_running(r) for r in plane.records):
            _info("already running")
            print(f"export KUBECONFIG={plane.kubeconfig}")
            return 0
        _info("stale state found (some process is gone): cleaning up first")
        _down(args.state_dir)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    settings = ControlPlaneSettings(
        work_dir=args.state_dir / "work",
        keep_work_dir=True,
        detached=True,
        start_timeout=args.timeout,
    )
    _info("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok...")
    plane = ControlPlane(settings).start()
    state_file.write_text(json.dumps(plane.to_state(), indent=2) + "\n")
    _info(f"ready in {plane.startup_seconds:.1f}s; logs in {plane.layout.log_dir}")
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if not _state_file(args.state_dir).exists():
        _info(f"nothing to stop (no {_state_file(args.state_dir)})")
        shutil.rmtree(args.state_dir, ignore_errors=True)
        return 0
    _down(args.state_dir)
    return 0


def _down(state_dir: Path) -> None:
    plane = ControlPlane.from_state(_state_file(state_dir))
    plane.stop(keep=True)
    left = {r.name: group_members(r.pid) for r in plane.records if group_members(r.pid)}
    if left:
        raise StateError(f"processes still running after stop: {left}")
    _info(
        f"stopped {len(plane.records)} processes: "
        + ", ".join(f"{r.name}({r.pid})" for r in plane.records)
    )
    shutil.rmtree(state_dir, ignore_errors=True)


def cmd_status(args: argparse.Namespace) -> int:
    state_file = _state_file(args.state_dir)
    if not state_file.exists():
        _info("not running")
        return 1
    plane = ControlPlane.from_state(state_file)
    rows = {
        r.name: {"pid": r.pid, "running": is_running(r), "log": str(r.log_path)}
        for r in plane.records
    }
    try:
        ready = plane.rest().get_text("/readyz") == "ok"
    # Status must report a broken cluster, not crash on it.
    except (K8sEnvError, OSError) as e:
        ready = False
        _info(f"readyz: {e}")
    healthy = ready and all(row["running"] for row in rows.values())
    if args.json:
        print(
            json.dumps(
                {"kubeconfig": str(plane.kubeconfig), "ready": healthy, "processes": rows}, indent=2
            )
        )
    else:
        print(f"kubeconfig: {plane.kubeconfig}\napiserver ready: {ready}")
        for name, row in rows.items():
            print(f"  {name:<24} pid {row['pid']:<8} {'running' if row['running'] else 'DEAD'}")
    return 0 if healthy else 1


def _info(message: str) -> None:
    print(f"k8senv: {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    default_state = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / "jobferry-k8senv"
    parser = argparse.ArgumentParser(
        prog="python -m tests.k8senv",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("K8SENV_STATE") or default_state),
        help="where up/down/status keep their state (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build the pinned binaries (no-op when cached)").set_defaults(
        func=cmd_build
    )
    up = commands.add_parser(
        "up", help="start a detached control plane; print export KUBECONFIG=..."
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        help="seconds to become ready (default: %(default)s)",
    )
    up.set_defaults(func=cmd_up)
    commands.add_parser("down", help="stop the detached control plane").set_defaults(func=cmd_down)
    status = commands.add_parser(
        "status", help="show processes and readiness; exit 1 if not healthy"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    # Known failures: one red line on stderr and exit status 1, no traceback.
    except K8sEnvError as e:
        print(f"\033[31mk8senv: error: {e}\033[0m", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
