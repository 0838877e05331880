"""``KubeEmulator``: the API server stand-in that real worker processes reach over HTTP.

Integration tests run Celery workers as separate processes that use the real
``kubernetes`` client, so the emulator must be a real HTTP server on 127.0.0.1 while the
test body stays synchronous. It runs kmock's server on its own asyncio loop in a background
thread. Every test-side helper hops onto that loop to do its work, so the model is only
ever touched from one thread: helpers are thread-safe without locks, and a status a test
sets is seen by watches and later reads exactly like a write through the API.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import kmock

from . import _jobs, _objects, _pods
from ._handler import EmulatorHandler, RecordedRequest, Settings
from ._resources import JOBS, PODS, ResourceType
from ._selectors import matches, parse_labels

JsonDict = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")
DEFAULT_USER = "system:serviceaccount:default:jobferry-worker"
DEFAULT_TOKEN = "emulator-token"
CONTEXT = "emulator"
CALL_TIMEOUT = 10.0
"""Seconds a test-side helper waits for the emulator's loop before giving up."""


def _selector_text(selector: str | Mapping[str, str] | None) -> str | None:
    if selector is None or isinstance(selector, str):
        return selector
    return ",".join(f"{key}={value}" for key, value in selector.items())


class KubeEmulator:
    """An emulated Kubernetes API server for jobs, pods and namespaces.

    Usage::

        with KubeEmulator() as kube:
            config = kube.write_kubeconfig(tmp_path / "kubeconfig")
            ...  # start workers with KUBECONFIG=config
            kube.set_job_status("default", "job-1", {"succeeded": 1})

    Parameters:
        user: the user that RBAC-style 403 messages name.
        token: the bearer token requests must carry (the kubeconfig carries it);
            None accepts requests without one.
        host: the address to listen on.
        port: the port to listen on; 0 picks a free one.
    """

    def __init__(
        self,
        *,
        user: str = DEFAULT_USER,
        token: str | None = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._settings = Settings(user=user, token=token)
        self._host, self._port = host, port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._handler: EmulatorHandler | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._url: str | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving; returns once the port accepts connections.

        Raises:
            RuntimeError: already started, or the server failed to start (chained).
        """
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(CALL_TIMEOUT) or self._failure is not None:
            self._thread.join(CALL_TIMEOUT)
            self._thread = None
            raise RuntimeError("the Kubernetes emulator did not start") from self._failure
        return self

    def stop(self) -> None:
        """Close open watches, stop the server and join its thread (idempotent)."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(CALL_TIMEOUT * 3)
        self._thread = self._loop = self._stopping = self._handler = None
        self._url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to start(); a thread has nobody else to tell
            self._failure = error
            self._ready.set()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        handler = EmulatorHandler(self._settings)
        handler.add_namespace("default")
        async with (
            handler,
            kmock.Server(handler, host=self._host, port=self._port or None) as server,
        ):
            self._handler, self._loop = handler, asyncio.get_running_loop()
            self._url = f"http://{server.host}:{server.port}"
            self._ready.set()
            await self._stopping.wait()
            handler.close_streams()
            await asyncio.sleep(0.05)  # let the watch handlers write their last bytes

    def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the emulator's loop and return its result (or raise its error)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the emulator is not started")
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(CALL_TIMEOUT)

    @property
    def _live(self) -> EmulatorHandler:
        if self._handler is None:
            raise RuntimeError("the emulator is not started")
        return self._handler

    # -- connection ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the API server address."""
        if self._url is None:
            raise RuntimeError("the emulator is not started")
        return self._url

    @property
    def token(self) -> str | None:
        return self._settings.token

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (context ``emulator``, plain http, a token user); returns its path."""
        user: JsonDict = {"token": self._settings.token} if self._settings.token else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT, "user": user}],
            "contexts": [
                {
                    "name": CONTEXT,
                    "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"},
                }
            ],
            "current-context": CONTEXT,
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2))  # JSON is valid YAML
        return target

    def reset(self) -> None:
        """Forget all objects, logs, faults and recorded requests; keep namespace ``default``."""
        self._call(self._live.reset)

    def compact(self) -> None:
        """Forget every change so far, as etcd compaction does: a watch or list from an
        older resourceVersion gets 410 Expired (a watch that is open keeps going)."""
        self._call(self._live.store.compact)

    # -- namespaces and jobs ------------------------------------------------------------

    def add_namespace(self, name: str) -> None:
        """Create a namespace (like ``kubectl create namespace``)."""
        self._call(self._live.add_namespace, name)

    def get_job(self, namespace: str, name: str) -> JsonDict | None:
        """The Job as stored (a copy), or None."""
        return self._call(self._live.store.get, JOBS, namespace, name)

    def list_jobs(
        self, namespace: str, selector: str | Mapping[str, str] | None = None
    ) -> list[JsonDict]:
        """Jobs in a namespace, optionally filtered by a label selector (``a=b,c!=d``)."""
        return self._call(self._list, JOBS, namespace, _selector_text(selector))

    def job_history(self, namespace: str, name: str) -> list[JsonDict | None]:
        """Every version the Job went through, oldest first; None marks a deletion."""
        return self._call(self._live.store.history, JOBS, namespace, name)

    def set_job_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> JsonDict:
        """Replace the Job's whole status, as the Job controller would; returns the Job."""
        return self._call(self._set_status, JOBS, namespace, name, lambda _: dict(status))

    def mark_job_succeeded(self, namespace: str, name: str) -> JsonDict:
        """Give the Job the status a real controller writes on success (Complete condition)."""
        return self._call(self._set_status, JOBS, namespace, name, _jobs.succeeded_status)

    def mark_job_failed(
        self,
        namespace: str,
        name: str,
        reason: str = "BackoffLimitExceeded",
        message: str = "Job has reached the specified backoff limit",
    ) -> JsonDict:
        """Give the Job the status a real controller writes on failure (Failed condition)."""
        return self._call(
            self._set_status,
            JOBS,
            namespace,
            name,
            lambda job: _jobs.failed_status(job, reason, message),
        )

    # -- pods ---------------------------------------------------------------------------

    def add_pod_for_job(
        self,
        namespace: str,
        job_name: str,
        *,
        phase: str = "Running",
        container_state: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Create a pod the way the Job controller would; returns the pod's name.

        The pod carries the Job's template labels (``job-name``, ``controller-uid`` and
        their ``batch.kubernetes.io/`` forms) and a controller ownerReference to the Job.
        ``container_state`` is one Kubernetes container state for every container, e.g.
        ``{"terminated": {"exitCode": 1}}`` or ``{"waiting": {"reason": "ImagePullBackOff"}}``;
        the default is ``{"running": {}}``.

        Raises:
            LookupError: the Job does not exist.
            ValueError: the container state is malformed.
        """
        state = _pods.complete_state(container_state or {"running": {}})
        return self._call(self._add_pod_for_job, namespace, job_name, phase, state, name)

    def get_pod(self, namespace: str, name: str) -> JsonDict | None:
        return self._call(self._live.store.get, PODS, namespace, name)

    def list_pods(
        self, namespace: str, selector: str | Mapping[str, str] | None = None
    ) -> list[JsonDict]:
        return self._call(self._list, PODS, namespace, _selector_text(selector))

    def update_pod_status(self, namespace: str, pod: str, status: Mapping[str, Any]) -> JsonDict:
        """Merge top-level status fields into the pod's status (others stay); returns the pod."""
        return self._call(
            self._set_status, PODS, namespace, pod, lambda old: {**old["status"], **status}
        )

    def set_pod_log(
        self, namespace: str, pod: str, text: str, container: str | None = None
    ) -> None:
        """Set the full log text ``pods/POD/log`` returns (for one container, or any)."""
        self._call(self._live.set_log, namespace, pod, container, text)

    # -- request journal ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every served request as (method, path, status), in arrival order."""
        return self._live.journal.snapshot()

    @property
    def internal_errors(self) -> list[Exception]:
        """Exceptions the emulator itself raised while serving (each answered as a 500)."""
        return list(self._live.internal_errors)

    def clear_requests(self) -> None:
        self._live.journal.clear()

    def count_requests(self, method: str | None = None, path_regex: str | None = None) -> int:
        """How many served requests match the method (any case) and path regex (searched)."""
        pattern = re.compile(path_regex) if path_regex is not None else None
        return sum(
            1
            for request in self.requests
            if (method is None or request.method == method.upper())
            and (pattern is None or pattern.search(request.path))
        )

    # -- faults -------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        resource_path_regex: str,
        status: int,
        times: int = 1,
        reason: str | None = None,
        message: str | None = None,
        *,
        causes: Sequence[Mapping[str, str]] = (),
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` matching requests fail with a real-looking Status.

        ``method`` is an HTTP method or ``*``; the regex is searched in the URL path. Each
        code gets the real server's reason and a message for the request (403 names the
        user, verb, resource and namespace like RBAC; 422 lists ``causes`` given as
        ``{"reason", "message", "field"}`` dicts; 429 sets Retry-After); ``reason`` and
        ``message`` override them. The request does not reach the model.
        """
        self._call(
            self._live.faults.fail_next,
            method,
            resource_path_regex,
            status,
            times,
            reason,
            message,
            causes,
            retry_after,
        )

    def forbid(self, verb: str, resource: str, *, namespace: str | None = None) -> None:
        """Deny a verb on a resource until ``allow``/``reset`` (RBAC-worded 403).

        ``verb`` is a Kubernetes verb (create, get, list, watch, update, patch, delete,
        deletecollection) or ``*``; ``resource`` is ``jobs``, ``jobs.batch``, ``pods/log``,
        ``jobs/status`` or ``*``.
        """
        self._call(self._live.faults.forbid, verb, resource, namespace)

    def allow(self, verb: str, resource: str, *, namespace: str | None = None) -> None:
        """Undo an identical ``forbid``."""
        self._call(self._live.faults.allow, verb, resource, namespace)

    def delay_next(
        self, method: str, resource_path_regex: str, seconds: float, times: int = 1
    ) -> None:
        """Stall the next ``times`` matching requests by ``seconds`` before answering."""
        self._call(self._live.faults.delay_next, method, resource_path_regex, seconds, times)

    # -- on the loop --------------------------------------------------------------------

    def _list(self, rtype: ResourceType, namespace: str, selector: str | None) -> list[JsonDict]:
        labels = parse_labels(selector)
        return [
            obj for obj in self._live.store.list_objects(rtype, namespace) if matches(obj, labels)
        ]

    def _set_status(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        make: Callable[[JsonDict], Mapping[str, Any]],
    ) -> JsonDict:
        store = self._live.store
        current = store.get(rtype, namespace, name)
        if current is None:
            raise LookupError(f"{rtype.plural} {namespace}/{name} does not exist")
        updated = copy.deepcopy(current)
        updated["status"] = copy.deepcopy(dict(make(current)))
        return store.replace(rtype, updated)

    def _add_pod_for_job(
        self, namespace: str, job_name: str, phase: str, state: JsonDict, name: str | None
    ) -> str:
        store = self._live.store
        job = store.get(JOBS, namespace, job_name)
        if job is None:
            raise LookupError(f"jobs {namespace}/{job_name} does not exist")
        pod_name = name or f"{job_name}-{_objects.random_suffix()}"
        if store.get(PODS, namespace, pod_name) is not None:
            raise ValueError(f"pod {namespace}/{pod_name} already exists")
        store.insert(PODS, _pods.for_job(job, pod_name, phase, state))
        return pod_name
