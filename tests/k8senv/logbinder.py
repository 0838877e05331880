"""Log binder: gives each kwok pod the log its test asked for, by label or annotation.

kwok chooses a log file by pod *name* only, and Job pods get random names, so a static
config cannot say "pods of this Job log X". This small controller (a process beside kwok,
started and stopped with the control plane) watches pods and, for each pod that has

  * annotation jobferry.test/log       -> writes that text as a CRI log file,
  * annotation jobferry.test/log-file  -> uses that (CRI-format) file as is,
  * label jobferry.test/behaviour      -> writes a short text naming the behaviour,

creates a kwok `Logs` object named after the pod (owned by it, so garbage-collected with
it). Pods with none of those fall back to the control plane's catch-all ClusterLogs file.

Run: python -m tests.k8senv.logbinder --kubeconfig K --log-dir D [--ready-file F]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .behaviours import (
    BEHAVIOUR_LABEL,
    EXIT_CODE_ANNOTATION,
    LOG_ANNOTATION,
    LOG_FILE_ANNOTATION,
    Behaviour,
)
from .errors import ApiError, K8sEnvError
from .kubeconfig import load_credentials
from .logs import BINDER_NAME, apply_logs, logs_object, write_cri_log
from .rest import RestClient

_BEHAVIOUR_TEXT = {
    Behaviour.SUCCEED.value: "jobferry-k8senv: behaviour=succeed exit_code=0\n",
    Behaviour.SLOW_START.value: "jobferry-k8senv: behaviour=slow-start exit_code=0\n",
    Behaviour.FAIL.value: "jobferry-k8senv: behaviour=fail exit_code={exit_code}\n",
    Behaviour.OOM.value: "jobferry-k8senv: behaviour=oom exit_code=137 reason=OOMKilled\n",
    Behaviour.RUN_FOREVER.value: "jobferry-k8senv: behaviour=run-forever still running\n",
    Behaviour.IMAGEPULL.value: "",
}


class LogBinder:
    """Creates one kwok `Logs` object per pod that asks for a log."""

    def __init__(self, client: RestClient, log_dir: Path) -> None:
        self.client = client
        self.log_dir = log_dir
        self._bound: set[str] = set()

    def handle(self, event_type: str, pod: dict[str, Any]) -> None:
        metadata = pod.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        if event_type == "DELETED":
            self._forget(uid)
        elif uid and uid not in self._bound:
            try:
                self._bind(metadata)
            # 404: the Logs CRD is not installed yet - let run() retry. Anything else is
            # about this one pod (say, an invalid log-file path): report it and move on.
            except ApiError as e:
                if e.status == 404:
                    raise
                print(
                    f"logbinder: pod {metadata.get('namespace')}/{metadata.get('name')}: {e}",
                    file=sys.stderr,
                )
                self._bound.add(uid)

    def _bind(self, metadata: dict[str, Any]) -> None:
        log_file = self._log_file_for(metadata)
        if log_file is None:
            self._bound.add(str(metadata["uid"]))
            return
        obj = logs_object(
            metadata["namespace"],
            metadata["name"],
            log_file,
            owner_uid=metadata["uid"],
            managed_by=BINDER_NAME,
        )
        apply_logs(self.client, obj)
        self._bound.add(str(metadata["uid"]))

    def _log_file_for(self, metadata: dict[str, Any]) -> Path | None:
        annotations = metadata.get("annotations") or {}
        labels = metadata.get("labels") or {}
        if LOG_FILE_ANNOTATION in annotations:
            return Path(annotations[LOG_FILE_ANNOTATION])
        text = annotations.get(LOG_ANNOTATION)
        if text is None:
            template = _BEHAVIOUR_TEXT.get(labels.get(BEHAVIOUR_LABEL, ""), "")
            text = template.format(exit_code=annotations.get(EXIT_CODE_ANNOTATION, "1"))
        if not text:
            return None
        return write_cri_log(self._path(str(metadata["uid"])), text)

    def _forget(self, uid: str) -> None:
        self._bound.discard(uid)
        self._path(uid).unlink(missing_ok=True)

    def _path(self, uid: str) -> Path:
        return self.log_dir / f"{uid}.log"


def run(client: RestClient, binder: LogBinder, ready_file: Path | None) -> None:
    """List+watch pods forever, re-listing after any error (API restarts, expired watches)."""
    while True:
        try:
            listing = client.get("/api/v1/pods")
            for pod in listing.get("items", []):
                binder.handle("ADDED", pod)
            if ready_file:
                ready_file.write_text("ready\n")
            version = listing["metadata"]["resourceVersion"]
            for event in client.watch(
                "/api/v1/pods", {"resourceVersion": version, "allowWatchBookmarks": "false"}
            ):
                if event.get("type") == "ERROR":
                    break
                binder.handle(str(event["type"]), event["object"])
        # The binder must outlive API hiccups (and the Logs CRD appearing late): retry.
        except (K8sEnvError, OSError, KeyError, ValueError) as e:
            print(f"logbinder: {type(e).__name__}: {e}; retrying", file=sys.stderr, flush=True)
            time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    args.log_dir.mkdir(parents=True, exist_ok=True)
    client = RestClient(load_credentials(args.kubeconfig, args.log_dir / ".credentials"))
    run(client, LogBinder(client, args.log_dir), args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
