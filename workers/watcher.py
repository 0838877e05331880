"""`jobferry watcher`: one watch of Jobs and one of pods per namespace, written to Redis.

Polling every Job costs the API server requests in proportion to jobs x duration; a watch
per Job costs a connection each. One LIST+WATCH per namespace and resource costs the same
whether 1 or 5,000 workflows run there. What the watch sees goes into the status cache
(`workers.cache`), which status checks read, and when a Job ends, is deleted, or its pod
gets stuck, the watcher wakes that workflow's status check at once (a check task with its
own id and `wake=True`), so the outcome follows the Job within about a second while the
regular checks can wait long. When a pod starts running the watcher writes that into the
workflow's record itself: one Redis call instead of a task.

Replicas: each namespace has a lease in Redis (`SET NX PX`, renewed every second); one
replica holds it and watches, the others stand by and take over when the holder stops
renewing. Watches resume from the resourceVersion stored with the cache; on 410 Gone they
list again and replace the namespace's cache. Every error is logged and retried with
backoff, and the heartbeat says whether the cache can be trusted: the watcher never dies
silently, and checks fall back to the API server while it is unhealthy.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal, cast

import redis
from celery import Celery

from scheduler.celeryconfig import CHECK_TASK, make_celery
from scheduler.models import WorkflowState
from scheduler.records import INFLIGHT_KEY, RecordStore
from scheduler.settings import Settings
from workers import cache, outcomes
from workers.backends import classify, manifest
from workers.backends.base import UNRECOVERABLE_WAITING, BackendError, Gone, JobPhase, JobStatus
from workers.backends.kubernetes import KubernetesBackend
from workers.budget import make_budget

log = logging.getLogger("jobferry.watcher")

Resource = Literal["jobs", "pods"]
WATCH_SECONDS = 30
"""Each watch request asks the server to end it after this long; it resumes at once."""
RV_WRITE_SECONDS = 1.0
"""An event that changes nothing the cache keeps (a pod bound to its node, a finalizer
removed) is not written; its resourceVersion is, at most this often. Resuming from an older
one replays a few events, which write what the cache holds already."""
RESUME_QUIET_SECONDS = 0.5
"""A watch resumed from a stored resourceVersion is trusted at its first event, or once it
has been open this long without an error. A version the server has forgotten gets its 410
within milliseconds of the request opening; until then the cache may be stale."""
BATCH_EVENTS = 500
"""At most this many events that arrived while the last were written go into one write."""
QUEUED_EVENTS = 10_000
"""Events read ahead of the writes; past this the reader stops reading (the server buffers)."""
LEASE_PREFIX = "jobferry:watch:lease:"

# Renews a lease only for its holder; returns 1 when renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Lets a namespace go, only for its holder: deletes the lease and marks the cache not fresh.
# A replica whose lease already moved on must not touch the new holder's lease or heartbeat.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[2], 'fresh', '0')
return 1
"""


# Applies a batch of cache writes only while ARGV[1] holds the lease KEYS[1]: 1 when written,
# 0 (nothing written) when the lease moved on. From ARGV[2] on, each write is a command, the
# index of its key in KEYS, its argument count, then its arguments (see FencedWrites).
_FENCED_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 2
while i <= #ARGV do
  local count = tonumber(ARGV[i + 2])
  redis.call(ARGV[i], KEYS[tonumber(ARGV[i + 1])], unpack(ARGV, i + 3, i + 2 + count))
  i = i + 3 + count
end
return 1
"""


class FencedWrites:
    """The cache writes of one listing or batch of events, collected for one `_FENCED_WRITE`.

    Offers the few redis-py pipeline methods the watch uses. A large mapping is split into
    several HSETs, each within the Lua stack's limit on unpacked arguments (about 8,000).
    """

    CHUNK = 1000
    """Field-value pairs per HSET."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.args: list[Any] = []
        self._index: dict[str, int] = {}

    def _write(self, command: str, key: str, *args: Any) -> None:
        if key not in self._index:
            self.keys.append(key)
            # KEYS[1] is the lease, and Lua counts from 1.
            self._index[key] = len(self.keys) + 1
        self.args += [command, self._index[key], len(args), *args]

    def hset(
        self, key: str, field: str | None = None, value: Any = None, mapping: Any = None
    ) -> None:
        pairs = [*([(field, value)] if field is not None else []), *(mapping or {}).items()]
        for start in range(0, len(pairs), self.CHUNK):
            flat = [part for pair in pairs[start : start + self.CHUNK] for part in pair]
            self._write("HSET", key, *flat)

    def hdel(self, key: str, *fields: str) -> None:
        self._write("HDEL", key, *fields)

    def set(self, key: str, value: Any, ex: int) -> None:
        self._write("SET", key, value, "EX", ex)

    def delete(self, key: str) -> None:
        self._write("DEL", key)


def wake_task_id(workflow_id: str) -> str:
    return f"jobferry-wake-{workflow_id}-{uuid.uuid4().hex[:12]}"


class Waker:
    """Tells a workflow what its Job did: a status check right away, apart from its regular
    check loop, or (a pod started) a new detail in its record."""

    def __init__(self, celery: Celery, client: redis.Redis, records: RecordStore) -> None:
        self._celery = celery
        self._redis = client
        self._records = records

    def running(self, workflow_id: str, namespace: str, job: str) -> None:
        # As a status check would say it from the cache: attempts = the Job's pods seen.
        attempts = int(self._redis.hlen(cache.pods_key(namespace, job)))
        detail = outcomes.live_detail(JobStatus(phase=JobPhase.RUNNING, attempts=attempts))
        # Refused (nothing written) for a workflow that has finished or has no record.
        if self._records.set_state(workflow_id, WorkflowState.RUNNING, detail):
            log.info("workflow %s: %s, Job %s", workflow_id, detail, job)

    def __call__(self, workflow_id: str, why: str, listed: bool = False) -> None:
        # A listing shows every finished Job its TTL still keeps: wake only those in flight.
        # (A watch event is news: its workflow is in flight, or the check just returns.)
        if listed and self._redis.zscore(INFLIGHT_KEY, RecordStore.key(workflow_id)) is None:
            return
        log.info("waking the status check of %s: %s", workflow_id, why)
        self._celery.send_task(
            CHECK_TASK,
            args=[workflow_id],
            kwargs={"wake": True},
            task_id=wake_task_id(workflow_id),
            ignore_result=True,
        )


class EventReader(threading.Thread):
    """Reads one watch request's events into a queue, so its writer can take what piled up.

    Writing each event as it comes costs a Redis round trip per event. While one write is
    out, the events that arrive queue here, and the next write takes all of them at once:
    the busier the namespace, the larger the batch, the fewer writes per event.
    """

    _END = object()

    def __init__(self, events: Iterator[dict[str, Any]], name: str) -> None:
        super().__init__(name=f"{name}-reader", daemon=True)
        self._events = events
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUED_EVENTS)
        self._abandoned = threading.Event()

    def run(self) -> None:
        try:
            for event in self._events:
                if not self._put(event):
                    return
        # The watch broke or got 410 Gone: the writer raises it after the events before it.
        except Exception as exc:
            self._put(exc)
            return
        finally:
            # A generator's `finally` gives its connection back now, not when it is collected.
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
        self._put(self._END)

    def _put(self, item: Any) -> bool:
        """Queue `item`; False once the writer has gone (then this thread ends)."""
        while not self._abandoned.is_set():
            try:
                self._queue.put(item, timeout=1.0)
                return True
            except queue.Full:
                continue
        return False

    def abandon(self) -> None:
        """The writer is done with this request: stop at the next event or the watch's end.

        The request ends by itself within its timeout (`WATCH_SECONDS`) if no event comes.
        """
        self._abandoned.set()

    def batches(self, stopping: threading.Event) -> Iterator[list[dict[str, Any]]]:
        """The queued events in order, in batches of at most `BATCH_EVENTS`.

        Ends when the request ends or `stopping` is set; raises what broke the watch once
        the events read before it are yielded.
        """
        while not stopping.is_set():
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            batch: list[dict[str, Any]] = []
            while True:
                if isinstance(item, Exception):
                    if batch:
                        yield batch
                    raise item
                if item is self._END:
                    if batch:
                        yield batch
                    return
                batch.append(item)
                if len(batch) >= BATCH_EVENTS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            yield batch


class ResourceWatch(threading.Thread):
    """LIST then WATCH one resource in one namespace, forever, writing the cache."""

    def __init__(
        self,
        backend: KubernetesBackend,
        client: redis.Redis,
        namespace: str,
        resource: Resource,
        selector: str,
        waker: Waker,
        holder: str = "",
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=f"watch-{resource}-{namespace}", daemon=True)
        self.holder = holder
        self.on_connected = on_connected
        self.backend, self.redis, self.namespace = backend, client, namespace
        self.resource, self.selector, self.waker = resource, selector, waker
        self.stopping = threading.Event()
        self._trusted = False
        self._resumed_at: float | None = None
        """When a resumed watch's request opened (monotonic); None when no such watch is open."""
        self._seen: dict[str, str] = {}
        self._written: dict[str, str] = {}
        """Name -> the cache value this watch last wrote for it (trimmed, as JSON)."""
        self._rv_written_at = 0.0
        self._write_script = client.register_script(_FENCED_WRITE)

    def stop(self) -> None:
        self.stopping.set()

    @property
    def connected(self) -> bool:
        """Whether the cache this watch writes can be trusted now.

        At once after a list. After a resume from a stored resourceVersion, at the first
        event or `RESUME_QUIET_SECONDS` after the request opened with no error: until then the
        server may still answer 410 Gone, and the cache may miss what happened meanwhile.
        """
        if self._trusted:
            return True
        opened = self._resumed_at
        return opened is not None and time.monotonic() - opened >= RESUME_QUIET_SECONDS

    def run(self) -> None:
        rv: str | None = self._stored_rv()
        failures = 0
        while not self.stopping.is_set():
            try:
                if rv is None:
                    rv = self._relist()
                    self._trust()
                events = self.backend.watch(
                    self.resource, self.namespace, self.selector, rv, WATCH_SECONDS
                )
                if not self._trusted and self._resumed_at is None:
                    self._resumed_at = time.monotonic()
                reader = EventReader(events, self.name)
                reader.start()
                try:
                    for batch in reader.batches(self.stopping):
                        self._trust()
                        rv = self._apply(*batch) or rv
                finally:
                    reader.abandon()
                failures = 0
            # The version is compacted away (or was never valid): start over from a list.
            except Gone as exc:
                self._distrust()
                log.warning("%s: %s; listing again", self.name, exc.message)
                self._error(f"410 Gone: {exc.message}", relist=True)
                rv = None
            # The API server or Redis failed: say so, mark the cache untrusted, back off.
            except (BackendError, redis.RedisError) as exc:
                self._distrust()
                failures += 1
                delay = min(30.0, 0.5 * 2**failures)
                text = exc.message if isinstance(exc, BackendError) else str(exc)
                log.warning("%s failed (%s); retrying in %.1f s", self.name, text, delay)
                self._error(text)
                self.stopping.wait(delay)
            # Anything else is a bug: log it loudly and keep watching after a pause.
            except Exception as exc:
                self._distrust()
                log.exception("%s crashed; restarting it", self.name)
                self._error(f"{type(exc).__name__}: {exc}")
                self.stopping.wait(5.0)
        self._distrust()

    def _trust(self) -> None:
        if self._trusted:
            return
        self._trusted = True
        # The heartbeat may say fresh now, not at the next tick up to 1 s away.
        if self.on_connected is not None:
            self.on_connected()

    def _distrust(self) -> None:
        self._trusted = False
        self._resumed_at = None
        self._written.clear()

    def _stored_rv(self) -> str | None:
        value = self.redis.hget(cache.health_key(self.namespace), f"{self.resource}_rv")
        return cache._text(value) or None

    def _error(self, text: str, relist: bool = False) -> None:
        try:
            pipe = self.redis.pipeline()
            pipe.hset(
                cache.health_key(self.namespace),
                mapping={"last_error": text[:500], "last_error_at": str(time.time())},
            )
            if relist:
                pipe.hincrby(cache.health_key(self.namespace), "relists", 1)
            pipe.execute()
        # Redis is down too: the log line above is all we can leave.
        except redis.RedisError:
            pass

    def _relist(self) -> str:
        listing = self.backend.list_objects(self.resource, self.namespace, self.selector)
        rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        items = list(listing.get("items") or [])
        if self.resource == "jobs":
            self._replace_jobs(items, rv)
        else:
            self._replace_pods(items, rv)
        log.info("%s: listed %d, watching from %s", self.name, len(items), rv)
        return rv

    def _replace_jobs(self, items: list[dict[str, Any]], rv: str) -> None:
        ns = self.namespace
        stored = cast(dict[Any, Any], self.redis.hgetall(cache.jobs_key(ns)))
        before = {cache._text(k): json.loads(v) for k, v in stored.items()}
        now = {item["metadata"]["name"]: cache.trim_job(item) for item in items}
        vanished = [job for name, job in before.items() if name not in now]

        writes = FencedWrites()
        writes.delete(cache.jobs_key(ns))
        if now:
            writes.hset(cache.jobs_key(ns), mapping={k: json.dumps(v) for k, v in now.items()})
        for job in vanished:
            name = job["metadata"]["name"]
            writes.set(cache.gone_key(ns, name), "1", ex=cache.TOMBSTONE_SECONDS)
        writes.hset(cache.health_key(ns), "jobs_rv", rv)
        if not self._fenced(writes):
            return
        self._seen.clear()
        self._written.clear()
        for job in now.values():
            self._job_changed(job, listed=True)
        for job in vanished:
            # Deleted while nobody watched (the gap a 410 or a takeover leaves).
            self._wake(job, "Job deleted while unwatched", listed=True)

    def _replace_pods(self, items: list[dict[str, Any]], rv: str) -> None:
        ns = self.namespace
        index = cast(dict[Any, Any], self.redis.hgetall(cache.podjob_key(ns)))

        writes = FencedWrites()
        for job in {cache._text(v) for v in index.values()}:
            writes.delete(cache.pods_key(ns, job))
        writes.delete(cache.podjob_key(ns))
        for pod in items:
            self._write_pod(writes, pod)
        writes.hset(cache.health_key(ns), "pods_rv", rv)
        if not self._fenced(writes):
            return
        self._seen.clear()
        self._written.clear()
        for pod in items:
            self._pod_changed(pod, listed=True)

    def _fenced(self, writes: FencedWrites) -> bool:
        """Apply `writes` in one Lua script that first checks this process still holds the
        namespace's lease: atomic, and one round trip per listing or batch of events. False,
        and the watch stops, when the lease moved on (this process stalled): the new holder
        writes from now on."""
        keys = [LEASE_PREFIX + self.namespace, *writes.keys]
        if self._write_script(keys=keys, args=[self.holder, *writes.args]):
            return True
        self.stopping.set()
        return False

    def _apply(self, *events: dict[str, Any]) -> str | None:
        """Write `events` to the cache in one fenced write, then act on them in order.

        Returns the resourceVersion to resume from: the last event's (the cache holds what it
        says, written now or before). None when no event carries one, or when the lease was
        lost (nothing written).
        """
        writes = FencedWrites()
        health = cache.health_key(self.namespace)
        written: dict[str, str | None] = {}
        """Name -> its new value in `_written` (None: forget it), once the write is done. Empty
        when no event in the batch changes what the cache keeps."""
        rv: Any = None
        acts: list[tuple[Any, dict[str, Any], dict[str, Any] | None]] = []
        for event in events:
            kind, obj = event.get("type"), event.get("object") or {}
            meta = obj.get("metadata") or {}
            name, rv = str(meta.get("name") or ""), meta.get("resourceVersion") or rv
            trimmed = None
            if kind == "DELETED":
                self._delete_object(writes, obj)
                written[name] = None
            elif kind in ("ADDED", "MODIFIED"):
                trimmed = self._trim(obj)
                value = json.dumps(trimmed)
                last = written[name] if name in written else self._written.get(name)
                if value != last:
                    self._write_object(writes, obj, value)
                    written[name] = value
            acts.append((kind, obj, trimmed))
        rv_due = time.monotonic() - self._rv_written_at >= RV_WRITE_SECONDS
        if written:
            writes.hset(health, "last_event_at", str(time.time()))
        if rv and (written or rv_due):
            writes.hset(health, f"{self.resource}_rv", rv)
        if writes.keys:
            if not self._fenced(writes):
                return None
            if rv:
                self._rv_written_at = time.monotonic()
        for name, wrote in written.items():
            if wrote is None:
                self._written.pop(name, None)
            else:
                self._written[name] = wrote
        for kind, obj, trimmed in acts:
            self._act(kind, obj, trimmed)
        return str(rv) if rv else None

    def _trim(self, obj: dict[str, Any]) -> dict[str, Any]:
        return cache.trim_job(obj) if self.resource == "jobs" else cache.trim_pod(obj)

    def _write_object(self, writes: FencedWrites, obj: dict[str, Any], value: str) -> None:
        if self.resource == "jobs":
            self._write_job(writes, obj, value)
        else:
            self._write_pod(writes, obj, value)

    def _delete_object(self, writes: FencedWrites, obj: dict[str, Any]) -> None:
        if self.resource == "jobs":
            self._delete_job(writes, obj)
        else:
            self._delete_pod(writes, obj)

    def _act(self, kind: Any, obj: dict[str, Any], trimmed: dict[str, Any] | None) -> None:
        """Wake or note what one written event means for its workflow."""
        if trimmed is not None:
            if self.resource == "jobs":
                self._job_changed(trimmed)
            else:
                self._pod_changed(obj)
        elif kind == "DELETED":
            self._seen.pop(obj["metadata"]["name"], None)
            if self.resource == "jobs":
                self._wake(obj, "Job deleted")

    def _write_job(self, writes: FencedWrites, job: dict[str, Any], value: str) -> None:
        ns, name = self.namespace, job["metadata"]["name"]
        writes.hset(cache.jobs_key(ns), name, value)
        writes.delete(cache.gone_key(ns, name))

    def _delete_job(self, writes: FencedWrites, job: dict[str, Any]) -> None:
        ns, name = self.namespace, job["metadata"]["name"]
        writes.hdel(cache.jobs_key(ns), name)
        writes.set(cache.gone_key(ns, name), "1", ex=cache.TOMBSTONE_SECONDS)

    def _write_pod(
        self, writes: FencedWrites, pod: dict[str, Any], value: str | None = None
    ) -> None:
        job = cache.pod_job(pod)
        if job is None:
            return
        name = pod["metadata"]["name"]
        value = value if value is not None else json.dumps(cache.trim_pod(pod))
        writes.hset(cache.pods_key(self.namespace, job), name, value)
        writes.hset(cache.podjob_key(self.namespace), name, job)

    def _delete_pod(self, writes: FencedWrites, pod: dict[str, Any]) -> None:
        job = cache.pod_job(pod)
        name = pod["metadata"]["name"]
        if job is not None:
            writes.hdel(cache.pods_key(self.namespace, job), name)
        writes.hdel(cache.podjob_key(self.namespace), name)

    def _job_changed(self, job: dict[str, Any], listed: bool = False) -> None:
        """Wake the check when a Job reaches its end (once per change of that)."""
        name = job["metadata"]["name"]
        status = classify.job_status(job, [])
        mark = "terminal" if status.phase.terminal else "open"
        if self._seen.get(name) != mark:
            self._seen[name] = mark
            if mark == "terminal":
                self._wake(job, f"Job {status.phase.value}", listed)

    def _pod_changed(self, pod: dict[str, Any], listed: bool = False) -> None:
        """Wake the check when a pod gets stuck (start-up grace); note it when it runs."""
        status = classify.job_status({"status": {}}, [pod])
        mark = status.waiting_reason if status.waiting_reason in UNRECOVERABLE_WAITING else ""
        mark = mark or ("running" if status.phase is JobPhase.RUNNING else "")
        name = pod["metadata"]["name"]
        if not mark or self._seen.get(name) == mark:
            return
        self._seen[name] = mark
        job = cache.pod_job(pod)
        workflow_id = _workflow_of(pod)
        if mark == "running" and job and workflow_id:
            self.waker.running(workflow_id, self.namespace, job)
        elif mark != "running":
            self._wake(pod, f"pod {mark}", listed)

    def _wake(self, obj: dict[str, Any], why: str, listed: bool = False) -> None:
        workflow_id = _workflow_of(obj)
        if workflow_id:
            self.waker(workflow_id, why, listed)


class NamespaceWatch:
    """The two watches of one namespace whose lease this process holds."""

    def __init__(self, watches: list[ResourceWatch]) -> None:
        self.watches = watches
        for watch in watches:
            watch.start()

    @property
    def fresh(self) -> bool:
        return all(w.connected and w.is_alive() for w in self.watches)

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()


class Watcher:
    """The process: leases, watches and heartbeats for every namespace to watch."""

    TICK_SECONDS = 1.0
    """Leases renewed, heartbeats written and namespaces looked for this often; also at once
    when a watch connects, so that a namespace's cache is trusted as soon as it can be."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        backend: KubernetesBackend,
        waker: Waker,
    ) -> None:
        self.settings, self.redis, self.backend, self.waker = settings, client, backend, waker
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.selector = manifest.owned_selector(settings.app_label)
        self.held: dict[str, NamespaceWatch] = {}
        self.stopping = threading.Event()
        # Set to tick before the second is up: a watch connected, or the process is stopping.
        self._poke = threading.Event()

    def namespaces(self) -> list[str]:
        return watched_namespaces(self.settings, self.redis)

    def run(self) -> None:
        log.info("watcher %s starting (selector %s)", self.holder, self.selector)
        while not self.stopping.is_set():
            # Cleared before the tick reads the watches: a poke from now on brings the next one.
            self._poke.clear()
            try:
                self.tick()
            # Redis is unreachable: keep trying; the heartbeats stop, so checks use the API.
            except redis.RedisError as exc:
                log.warning("watcher: Redis failed (%s); retrying", exc)
            self._poke.wait(self.TICK_SECONDS)
        for ns in list(self.held):
            self._release(ns)

    def tick(self) -> None:
        lease_ms = int(self.settings.watch_lease_seconds * 1000)
        namespaces = self.namespaces()
        for ns in set(self.held) - set(namespaces):
            log.info("watcher: no workflow in namespace %s any more; releasing it", ns)
            self._release(ns)
        for ns in namespaces:
            key = LEASE_PREFIX + ns
            if ns in self.held:
                if not self.redis.eval(_RENEW, 1, key, self.holder, lease_ms):
                    log.warning("watcher: lost the lease of namespace %s; standing by", ns)
                    self.held.pop(ns).stop()
                    continue
                watch = self.held[ns]
                for i, thread in enumerate(watch.watches):
                    if not thread.is_alive():
                        log.error("watcher: %s died; starting it again", thread.name)
                        watch.watches[i] = self._thread(ns, thread.resource)
                        watch.watches[i].start()
                self._heartbeat(ns, watch.fresh)
            elif self.redis.set(key, self.holder, nx=True, px=lease_ms):
                log.info("watcher: took the lease of namespace %s", ns)
                self.held[ns] = NamespaceWatch([self._thread(ns, "jobs"), self._thread(ns, "pods")])
                self._heartbeat(ns, False)

    def _thread(self, namespace: str, resource: Resource) -> ResourceWatch:
        return ResourceWatch(
            self.backend,
            self.redis,
            namespace,
            resource,
            self.selector,
            self.waker,
            self.holder,
            on_connected=self._poke.set,
        )

    def _heartbeat(self, namespace: str, fresh: bool) -> None:
        self.redis.hset(
            cache.health_key(namespace),
            mapping={
                "holder": self.holder,
                "heartbeat_at": str(time.time()),
                "fresh": "1" if fresh else "0",
            },
        )

    def _release(self, namespace: str) -> None:
        self.held.pop(namespace).stop()
        keys = [LEASE_PREFIX + namespace, cache.health_key(namespace)]
        try:
            self.redis.eval(_RELEASE, 2, *keys, self.holder)
        # Shutting down without Redis: the lease expires by itself.
        except redis.RedisError:
            pass

    def stop(self) -> None:
        self.stopping.set()
        self._poke.set()


def make_watcher(settings: Settings) -> Watcher:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=15)
    budget = make_budget(
        client, settings.api_qps, settings.api_burst, settings.api_budget_max_wait_seconds
    )
    backend = KubernetesBackend.from_settings(settings, dict(os.environ), budget)
    records = RecordStore(client, settings.outcome_ttl_seconds, settings.app_label)
    return Watcher(settings, client, backend, Waker(waker_celery(settings), client, records))


def waker_celery(settings: Settings) -> Celery:
    """The Celery app the wake-ups are sent with."""
    celery = make_celery(settings)
    # A wake-up is received within milliseconds: a `task-sent` event (one more Redis round
    # trip in the watch thread, per Job that ends) would tell Flower nothing.
    celery.conf.task_send_sent_event = False
    return celery


def run_watcher(settings: Settings) -> None:
    """The `jobferry watcher` process, until SIGTERM or Ctrl-C."""
    import signal

    watcher = make_watcher(settings)
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
    try:
        watcher.run()
    except KeyboardInterrupt:
        watcher.stop()
    finally:
        watcher.backend.close()


def start_watcher(settings: Settings) -> Callable[[], None]:
    """The watcher in a thread of this process (`jobferry worker --watch`).

    Returns the function that stops it: its namespaces are released (the heartbeat says not
    fresh, the lease is deleted) before it returns, so a standby takes over at once.
    """
    watcher = make_watcher(settings)

    def run() -> None:
        try:
            watcher.run()
        finally:
            watcher.backend.close()

    thread = threading.Thread(target=run, name="jobferry-watcher", daemon=True)
    thread.start()

    def stop() -> None:
        watcher.stop()
        thread.join(timeout=10)

    return stop


def watched_namespaces(settings: Settings, client: redis.Redis) -> list[str]:
    """`JOBFERRY_WATCH_NAMESPACES`, else those with a workflow before its deadline, or past
    it by less than `JOBFERRY_RECONCILE_SILENCE_SECONDS` (a late check can still read)."""
    if settings.watch_namespaces:
        return list(settings.watch_namespaces)
    records = RecordStore(client, settings.outcome_ttl_seconds, settings.app_label)
    return records.namespaces(deadline_after=time.time() - settings.reconcile_silence_seconds)


def _workflow_of(obj: dict[str, Any]) -> str | None:
    workflow_id = ((obj.get("metadata") or {}).get("labels") or {}).get(manifest.WORKFLOW_LABEL)
    return str(workflow_id) if workflow_id else None


def health_report(settings: Settings) -> tuple[bool, list[cache.Health]]:
    """Every watched namespace's health, and whether all of them can be trusted."""
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        namespaces = watched_namespaces(settings, client)
        healths = [cache.read_health(client, ns) for ns in namespaces]
    finally:
        client.close()
    ok = all(h.ok(settings.watch_stale_seconds) for h in healths)
    return ok, healths
