"""When each Job appeared and completed, as seen by one watch the benchmark holds (admin).

The same observer for jobferry and for the baselines, so their throughputs compare. A watch
event arrives within milliseconds of the API server storing the change, while the Job's own
`status.completionTime` has one-second resolution (RFC 3339 without fractions, truncated):
completion-to-outcome latency is measured from the watch, and also reported against
`completionTime` for reference.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.k8senv.errors import ApiError
from tests.k8senv.rest import RestClient


@dataclass
class JobTimes:
    created: float | None = None
    """time.time() when the watch first saw the Job."""
    finished: float | None = None
    """time.time() when the watch first saw a Complete or Failed condition."""
    completion_time: float | None = None
    """status.completionTime (or the condition's lastTransitionTime), one-second resolution."""
    succeeded: bool = False


@dataclass
class JobTimeline:
    """A thread watching the Jobs of one namespace; `jobs` maps Job name to its times."""

    rest: RestClient
    namespace: str
    jobs: dict[str, JobTimes] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> JobTimeline:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(60)
        return self

    def stop(self) -> None:
        self._stop.set()

    def created_count(self) -> int:
        with self._lock:
            return sum(1 for t in self.jobs.values() if t.created is not None)

    def finished_count(self) -> int:
        with self._lock:
            return sum(1 for t in self.jobs.values() if t.finished is not None)

    def in_flight_peak(self) -> int:
        """Most Jobs that existed unfinished at the same moment."""
        with self._lock:
            events = [(t.created, 1) for t in self.jobs.values() if t.created is not None]
            events += [(t.finished, -1) for t in self.jobs.values() if t.finished is not None]
        peak = current = 0
        for _, step in sorted(events, key=lambda e: (e[0], e[1])):
            current += step
            peak = max(peak, current)
        return peak

    def _run(self, ready: threading.Event) -> None:
        path = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    listing = self.rest.get(path)
                    for job in listing.get("items") or []:
                        self._observe(job)
                    version = listing["metadata"]["resourceVersion"]
                    ready.set()
                query = {
                    "resourceVersion": version,
                    "timeoutSeconds": "120",
                    "allowWatchBookmarks": "true",
                }
                for event in self.rest.watch(path, query):
                    if self._stop.is_set():
                        return
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        # 410 Gone: our resourceVersion is too old; list again.
                        version = ""
                        break
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._observe(obj)
            # The API server restarted or the stream broke: reconnect (relist after 410).
            except (OSError, ApiError, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if isinstance(exc, ApiError) and exc.status == 410:
                    version = ""
                time.sleep(0.5)

    def _observe(self, job: dict[str, Any]) -> None:
        now = time.time()
        name = job["metadata"]["name"]
        status = job.get("status") or {}
        with self._lock:
            times = self.jobs.setdefault(name, JobTimes())
            if times.created is None:
                times.created = now
            if times.finished is not None:
                return
            for condition in status.get("conditions") or []:
                if condition.get("type") in ("Complete", "Failed") and (
                    condition.get("status") == "True"
                ):
                    times.finished = now
                    times.succeeded = condition["type"] == "Complete"
                    stamp = status.get("completionTime") or condition.get("lastTransitionTime")
                    times.completion_time = parse_time(stamp)
                    return


def parse_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).timestamp()
