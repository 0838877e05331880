"""The shared status cache: Jobs and pods as the watcher last saw them, kept in Redis.

`jobferry watcher` holds one watch of Jobs and one of pods per namespace and writes what it
sees here; status checks read it instead of calling the API server, so the API load stays flat
however many workflows are in flight and however long they run. A check trusts the cache only
while the namespace's heartbeat is fresh (`JOBFERRY_WATCH_STALE_SECONDS`); otherwise it asks
the API server as before.

Keys, per namespace NS::

    jobferry:cache:NS:jobs          hash  Job name -> trimmed Job JSON
    jobferry:cache:NS:pods:JOB      hash  pod name -> trimmed pod JSON, for one Job
    jobferry:cache:NS:podjob        hash  pod name -> Job name (to drop pods on a re-list)
    jobferry:cache:NS:gone:JOB      str   tombstone of a Job seen deleted (1 day)
    jobferry:cache:NS:health        hash  holder, heartbeat_at, fresh, jobs_rv, pods_rv,
                                          relists, last_event_at, last_error, last_error_at
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

import redis

from workers.backends import classify
from workers.backends.base import JobPhase, JobRef, JobStatus

PREFIX = "jobferry:cache:"
TOMBSTONE_SECONDS = 86400

# Pod labels that name the pod's Job (the Job controller sets both since Kubernetes 1.27).
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def jobs_key(namespace: str) -> str:
    return f"{PREFIX}{namespace}:jobs"


def pods_key(namespace: str, job: str) -> str:
    return f"{PREFIX}{namespace}:pods:{job}"


def podjob_key(namespace: str) -> str:
    return f"{PREFIX}{namespace}:podjob"


def gone_key(namespace: str, job: str) -> str:
    return f"{PREFIX}{namespace}:gone:{job}"


def health_key(namespace: str) -> str:
    return f"{PREFIX}{namespace}:health"


def trim_job(job: dict[str, Any]) -> dict[str, Any]:
    """What the classifier and the wake-up need of a Job: names, labels, times, status."""
    meta = job.get("metadata") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": meta.get("labels") or {},
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "status": job.get("status") or {},
    }


def trim_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What the classifier needs of a pod: name, times, phase and container states."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    containers = [
        {
            "name": c.get("name"),
            "state": c.get("state") or {},
            "restartCount": c.get("restartCount"),
        }
        for c in status.get("containerStatuses") or []
    ]
    return {
        "metadata": {
            "name": meta.get("name"),
            "labels": meta.get("labels") or {},
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "status": {
            "phase": status.get("phase"),
            "startTime": status.get("startTime"),
            "containerStatuses": containers,
        },
    }


def pod_job(pod: dict[str, Any]) -> str | None:
    """The name of the Job a pod belongs to, from its labels or its owner reference."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for label in JOB_NAME_LABELS:
        if labels.get(label):
            return str(labels[label])
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "Job":
            return str(owner.get("name"))
    return None


@dataclass(frozen=True)
class Health:
    """A namespace's watch, as its heartbeat tells it."""

    namespace: str
    holder: str
    heartbeat_age: float | None
    fresh: bool
    jobs_rv: str
    pods_rv: str
    relists: int
    last_error: str

    def ok(self, stale_seconds: float) -> bool:
        return self.fresh and self.heartbeat_age is not None and self.heartbeat_age < stale_seconds


def read_health(client: redis.Redis, namespace: str) -> Health:
    stored = cast(dict[Any, Any], client.hgetall(health_key(namespace)))
    raw = {_text(k): _text(v) for k, v in stored.items()}
    beat = raw.get("heartbeat_at")
    return Health(
        namespace=namespace,
        holder=raw.get("holder", ""),
        heartbeat_age=time.time() - float(beat) if beat else None,
        fresh=raw.get("fresh") == "1",
        jobs_rv=raw.get("jobs_rv", ""),
        pods_rv=raw.get("pods_rv", ""),
        relists=int(raw.get("relists") or 0),
        last_error=raw.get("last_error", ""),
    )


NOT_SEEN_YET = JobStatus(phase=JobPhase.PENDING, reason="NotSeenYet")
"""The Job is not in a fresh cache yet (just created): look again later, without the API."""


class StatusCache:
    """The read side, used by status checks: one round trip to Redis per check."""

    def __init__(self, client: redis.Redis, stale_seconds: float) -> None:
        self._redis = client
        self._stale = stale_seconds
        self._fresh: dict[str, tuple[float, bool]] = {}

    def fresh(self, namespace: str) -> bool:
        """Whether the namespace's watch can be trusted now (its heartbeat is recent).

        Remembered per process, as a burst of launches asks it once each: for a second when
        fresh (the heartbeat it reads is renewed every second anyway), for a quarter of one
        when not. A namespace's first workflows find its watch not started yet, and each
        launch that sees it so comes back for a short-interval check.
        """
        now = time.monotonic()
        until, known = self._fresh.get(namespace, (0.0, False))
        if now < until:
            return known
        fields = self._redis.hmget(health_key(namespace), "fresh", "heartbeat_at")
        fresh, beat = cast(list[Any], fields)
        known = _fresh(fresh, beat, self._stale)
        self._fresh[namespace] = (now + (1.0 if known else 0.25), known)
        return known

    def read(self, ref: JobRef, first_look: bool) -> JobStatus | None:
        """The Job's status from the cache; None when the caller must ask the API server.

        Returns `NOT_SEEN_YET` on the first look at a Job the watcher has not written yet,
        and phase MISSING for a Job the watcher saw deleted (the caller confirms with a GET).
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(health_key(ref.namespace), "fresh", "heartbeat_at")
        pipe.hget(jobs_key(ref.namespace), ref.name)
        pipe.hvals(pods_key(ref.namespace, ref.name))
        pipe.exists(gone_key(ref.namespace, ref.name))
        (fresh, beat), job, pods, gone = pipe.execute()
        if not _fresh(fresh, beat, self._stale):
            return None
        if job is None:
            if gone:
                return JobStatus(phase=JobPhase.MISSING)
            return NOT_SEEN_YET if first_look else None
        return classify.job_status(json.loads(job), [json.loads(p) for p in pods])


def _fresh(fresh: Any, beat: Any, stale_seconds: float) -> bool:
    return _text(fresh) == "1" and bool(beat) and time.time() - float(beat) < stale_seconds


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
