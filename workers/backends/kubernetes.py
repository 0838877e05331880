"""The Kubernetes backend: Jobs through the official client.

This module is the only place that imports `kubernetes` (an import-linter contract holds it
to that). API errors are translated here, at the boundary, into the `base` error tree, so the
tasks never see an `ApiException`. Payloads are read as raw JSON (`_preload_content=False`):
the classifier works on the API's own shape, and no time is spent building model objects.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

from scheduler.errors import RequestError
from scheduler.models import WorkflowRequest
from scheduler.settings import Settings
from workers import telemetry
from workers.backends import classify, manifest
from workers.backends.base import (
    BackendError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    JobBackend,
    JobPhase,
    JobRef,
    JobStatus,
    NotFound,
    TemporaryError,
)
from workers.budget import Budget, Unlimited

log = logging.getLogger(__name__)


def load_client_configuration(settings: Settings, environ: dict[str, str]) -> client.Configuration:
    """Find cluster credentials as kubectl does: in-cluster, then KUBECONFIG, then ~/.kube/config.

    An explicit `JOBFERRY_KUBECONFIG` is the only place tried when set.

    Raises:
        RequestError: listing every place tried and why each failed.
    """
    configuration = client.Configuration()
    tried: list[str] = []
    if settings.kubeconfig is not None:
        candidates = [settings.kubeconfig]
    else:
        if environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(client_configuration=configuration)
                return configuration
            # Not a usable pod environment: say so and fall through to kubeconfig files.
            except ConfigException as exc:
                tried.append(f"in-cluster config ({exc})")
        else:
            tried.append("in-cluster config (KUBERNETES_SERVICE_HOST is not set)")
        from_env = [Path(p) for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        candidates = from_env or [Path(environ.get("HOME", "~")).expanduser() / ".kube/config"]
    for path in candidates:
        if not path.is_file():
            tried.append(f"{path} (no such file)")
            continue
        try:
            config.load_kube_config(
                config_file=str(path),
                context=settings.kube_context,
                client_configuration=configuration,
            )
            return configuration
        # A broken file or an unknown context: report it with the others.
        except (ConfigException, ValueError, OSError) as exc:
            tried.append(f"{path} ({exc})")
    raise RequestError(
        "no Kubernetes configuration found; tried: " + "; ".join(tried) + ". Set KUBECONFIG or "
        "JOBFERRY_KUBECONFIG, run the worker in a pod with a ServiceAccount, or use "
        "JOBFERRY_BACKEND=local"
    )


class KubernetesBackend(JobBackend):
    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        configuration: client.Configuration,
        budget: Budget | None = None,
    ) -> None:
        self._settings = settings
        self._budget = budget or Unlimited()
        self._api = client.ApiClient(configuration)
        self._batch = client.BatchV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._timeout = settings.api_timeout_seconds

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: dict[str, str], budget: Budget | None = None
    ) -> KubernetesBackend:
        return cls(settings, load_client_configuration(settings, environ), budget)

    def close(self) -> None:
        self._api.close()

    def create(
        self, request: WorkflowRequest, job_name: str, extra_env: dict[str, str] | None = None
    ) -> JobRef:
        body = manifest.build_job(request, job_name, self._settings.app_label, extra_env)
        namespace = request.namespace
        try:
            created = self._call(
                "create",
                "jobs",
                namespace,
                lambda: self._batch.create_namespaced_job(
                    namespace, body, _preload_content=False, _request_timeout=self._timeout
                ),
            )
        except Conflict:
            return self._adopt(request, job_name)
        except NotFound as exc:
            raise NotFound(
                f"namespace {namespace!r} does not exist ({exc.message}); create it or "
                "submit to an existing namespace",
                reason="NamespaceNotFound",
            ) from exc
        return JobRef(
            job_name, namespace, classify.parse_time(created["metadata"].get("creationTimestamp"))
        )

    def _adopt(self, request: WorkflowRequest, job_name: str) -> JobRef:
        """A Job of our name exists: adopt it if it is this workflow's, refuse otherwise."""
        namespace = request.namespace
        existing = self._read_job(job_name, namespace)
        if existing is None:
            raise TemporaryError(f"Job {job_name} existed and vanished; creating it again")
        labels = existing["metadata"].get("labels") or {}
        ours = (
            labels.get(manifest.WORKFLOW_LABEL) == request.workflow_id
            and labels.get(manifest.MANAGED_BY) == manifest.MANAGER
        )
        if not ours:
            raise Conflict(
                f"a Job named {job_name} already exists in namespace {namespace!r} and does not "
                f"belong to workflow {request.workflow_id!r} (labels {labels}); jobferry will not "
                "touch it. Delete or rename that Job, or submit under another workflow id",
                reason="NameConflict",
            )
        log.info(
            "adopted existing Job %s/%s for workflow %s", namespace, job_name, request.workflow_id
        )
        return JobRef(
            job_name,
            namespace,
            classify.parse_time(existing["metadata"].get("creationTimestamp")),
            True,
        )

    def get(self, ref: JobRef) -> JobStatus:
        job = self._read_job(ref.name, ref.namespace)
        if job is None:
            return JobStatus(phase=JobPhase.MISSING)
        status = job.get("status") or {}
        active, ready = int(status.get("active") or 0), status.get("ready")
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if not finished and active > 0 and ready is not None and int(ready) >= active:
            # Every pod is running and ready: nothing in the pods can change the verdict,
            # so spare the API server the LIST.
            return replace(classify.job_status(job, []), phase=JobPhase.RUNNING)
        return classify.job_status(job, self._list_pods(ref))

    def delete(self, ref: JobRef) -> None:
        policy = self._settings.delete_propagation
        try:
            self._call(
                "delete",
                "jobs",
                ref.namespace,
                lambda: self._batch.delete_namespaced_job(
                    ref.name,
                    ref.namespace,
                    propagation_policy=policy,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                ),
            )
        # Already gone is what we wanted.
        except NotFound:
            return

    def logs(self, ref: JobRef, status: JobStatus, tail_lines: int, limit_bytes: int) -> str:
        if status.pod_name is None or tail_lines == 0:
            return ""
        pod = status.pod_name
        self._budget.acquire()
        try:
            with telemetry.kube_api_call("get", "pods/log", ref.namespace) as observed:
                try:
                    response = self._core.read_namespaced_pod_log(
                        pod,
                        ref.namespace,
                        container=manifest.CONTAINER_NAME,
                        tail_lines=tail_lines,
                        limit_bytes=limit_bytes or None,
                        _preload_content=False,
                        _request_timeout=self._timeout,
                    )
                except ApiException as exc:
                    observed.code = exc.status
                    raise
                observed.code = response.status
        # Logs are evidence, not the verdict: a pod without logs must not fail the outcome.
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("no log for pod %s/%s: %s", ref.namespace, pod, _short(exc))
            return ""
        return bytes(response.data).decode("utf-8", errors="replace")

    def list_objects(
        self, resource: Literal["jobs", "pods"], namespace: str, selector: str
    ) -> dict[str, Any]:
        """One LIST of jobferry's Jobs or pods: the API's list object (items, resourceVersion)."""
        lister = self._lister(resource)
        return self._call(
            "list",
            resource,
            namespace,
            lambda: lister(
                namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
        )

    def watch(
        self,
        resource: Literal["jobs", "pods"],
        namespace: str,
        selector: str,
        resource_version: str,
        timeout_seconds: int,
    ) -> Iterator[dict[str, Any]]:
        """Open a watch from `resource_version`; iterate its events (`type`, `object`).

        The request is made here, not at the first event, so the caller knows the server has
        answered. Bookmarks are asked for, so an idle watch still moves its resourceVersion on.
        One request per watch, charged once to the API budget however many events it carries.

        Raises:
            Gone: the resourceVersion is too old (410); list again. Here, or from the events.
            TemporaryError: the watch broke; resume from the last resourceVersion seen. Here,
                or from the events.
        """
        self._budget.acquire()
        try:
            response = self._lister(resource)(
                namespace,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=(self._timeout, timeout_seconds + self._timeout),
            )
        except ApiException as exc:
            # Asked for a version the server no longer keeps: the caller lists again.
            if exc.status == 410:
                raise Gone(f"watch of {resource} in {namespace!r}: {exc.reason}") from exc
            raise translate_api_error(exc, "watch", resource, namespace) from exc
        # Unreachable: the caller backs off and resumes from its last version.
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TemporaryError(
                f"the Kubernetes API did not open the watch of {resource}: {_short(exc)}"
            ) from exc
        return _watch_events(response, resource, namespace)

    def owned_jobs(self, namespace: str, selector: str) -> list[tuple[str, str]]:
        listing = self.list_objects("jobs", namespace, selector)
        return [
            (
                item["metadata"]["name"],
                str((item["metadata"].get("labels") or {}).get(manifest.WORKFLOW_LABEL, "")),
            )
            for item in listing.get("items") or []
        ]

    def _lister(self, resource: Literal["jobs", "pods"]) -> Any:
        if resource == "jobs":
            return self._batch.list_namespaced_job
        return self._core.list_namespaced_pod

    def _server_ready(self) -> bool:
        """Whether kube-apiserver answers `ok` to GET /readyz (allowed to every identity)."""
        try:
            response = self._api.call_api(
                "/readyz",
                "GET",
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=self._timeout,
            )
        # Refused, 403 (the roles that allow /readyz not loaded yet) or 5xx: not ready.
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            return False
        return bytes(response.data).strip() == b"ok"

    def _read_job(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self._call(
                "get",
                "jobs",
                namespace,
                lambda: self._batch.read_namespaced_job(
                    name, namespace, _preload_content=False, _request_timeout=self._timeout
                ),
            )
        # No such Job (any more): the caller decides what that means.
        except NotFound:
            return None

    def _list_pods(self, ref: JobRef) -> list[dict[str, Any]]:
        pods = self._call(
            "list",
            "pods",
            ref.namespace,
            lambda: self._core.list_namespaced_pod(
                ref.namespace,
                label_selector=f"job-name={ref.name}",
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
        )
        return list(pods.get("items") or [])

    def _call(self, verb: str, resource: str, namespace: str, call: Any) -> dict[str, Any]:
        self._budget.acquire()
        with telemetry.kube_api_call(verb, resource, namespace) as observed:
            try:
                response = call()
            except ApiException as exc:
                observed.code = exc.status
                error = translate_api_error(exc, verb, resource, namespace)
                # A 403 is only believed from a ready API server: one that has just started
                # serves before its RBAC caches are loaded, and denies what the Role grants.
                if exc.status == 403 and not self._server_ready():
                    raise TemporaryError(
                        f"the API server refused {verb} {resource} while it was not ready "
                        f"(/readyz failed; RBAC caches still loading after a start?): "
                        f"{error.message}",
                        reason="ApiNotReady",
                    ) from exc
                raise error from exc
            # The API server is unreachable or slow: transport errors are always worth a retry.
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise TemporaryError(
                    f"the Kubernetes API did not answer {verb} {resource}: {_short(exc)}",
                    reason="ApiUnavailable",
                ) from exc
            observed.code = response.status
        data: dict[str, Any] = json.loads(response.data or b"{}")
        return data


def translate_api_error(
    exc: ApiException, verb: str, resource: str, namespace: str
) -> BackendError:
    """Map an API error to the `base` tree, keeping the API server's own message."""
    status = int(exc.status or 0)
    body = _status_body(exc)
    message = str(body.get("message") or exc.reason or f"HTTP {status}")
    if status in (401, 403):
        if status == 401:
            return Forbidden(
                f"the API server did not accept the worker's credentials: {message}. Check "
                "the worker's kubeconfig or ServiceAccount token (expired or revoked?)",
                reason="Unauthorized",
            )
        return Forbidden(
            f"the worker may not {verb} {resource} in namespace {namespace!r}: {message}. "
            f"Grant '{verb}' on {resource} with the Role in k8s/rbac.yaml (in that namespace) "
            f"and check with `kubectl auth can-i {verb} {resource} -n {namespace} "
            f"--as=system:serviceaccount:<namespace>:<service-account>`. RBAC is checked "
            f"before existence, so also check that namespace {namespace!r} exists",
            reason="Forbidden",
        )
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status in (400, 422):
        return Invalid(f"the API server refused the {resource} manifest: {message}", "Invalid")
    retry_after = _retry_after(exc)
    if status == 429 or status >= 500:
        return TemporaryError(
            f"the Kubernetes API answered {status} to {verb} {resource}: {message}",
            reason="TooManyRequests" if status == 429 else "ServerError",
            retry_after=retry_after,
        )
    return Invalid(f"unexpected answer {status} to {verb} {resource}: {message}", "Unexpected")


def _status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    # Proxies and load balancers answer with HTML; keep their status line instead.
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    # HTTP-date forms are rare from the API server; fall back to our own backoff.
    except ValueError:
        return None


def _watch_events(response: Any, resource: str, namespace: str) -> Iterator[dict[str, Any]]:
    """The events of an open watch; an ERROR event is raised as `Gone` or `TemporaryError`."""
    try:
        for line in iter_resp_lines(response):
            if not line:
                continue
            event: dict[str, Any] = json.loads(line)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                message = str(status.get("message") or status)
                if status.get("code") == 410:
                    raise Gone(f"watch of {resource} in {namespace!r}: {message}")
                raise TemporaryError(f"watch of {resource} in {namespace!r}: {message}")
            yield event
    # The stream broke (server restart, network): the caller resumes from its last version.
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        raise TemporaryError(
            f"the watch of {resource} in {namespace!r} broke: {_short(exc)}"
        ) from exc
    finally:
        response.release_conn()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
