"""The API verbs on modelled resources, as plain synchronous functions over the store.

These are what kmock's emulator gets wrong or lacks for our resources: create answers 201
with server-filled metadata and refuses a missing namespace or a duplicate name with the
real Status; update and patch respect the ``/status`` subresource and optimistic locking;
delete follows ``propagationPolicy`` (batch/v1 Jobs orphan their pods by default, with the
real server's warning) and answers a ``Status`` or the object exactly when the real server
does; lists honour selectors and ``limit``/``continue``; ``pods/NAME/log`` is text.
The garbage collector's end state is applied at once instead of eventually.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import _jobs, _objects, _patches, _pods, _selectors, _status
from ._resources import JOBS, NAMESPACES, PODS, ApiPath, ResourceType
from ._store import Store, with_type

JsonDict = dict[str, Any]
LogTexts = dict[tuple[str, str], dict[str | None, str]]
JOB_DELETE_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set '
    "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress "
    'this warning"'
)
_POLICIES = ("Foreground", "Background", "Orphan")
_SUBRESOURCES: Mapping[ResourceType, frozenset[str]] = {
    JOBS: frozenset({"status"}),
    PODS: frozenset({"status", "log"}),
    NAMESPACES: frozenset({"status"}),
}


@dataclass(frozen=True)
class ApiRequest:
    """One request to a modelled resource, decoded."""

    method: str
    path: ApiPath
    query: Mapping[str, str]
    body: Any
    has_body: bool
    content_type: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: JsonDict | str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _DeleteOptions:
    policy: str | None
    uid: str | None
    resource_version: str | None


def _not_found(path: ApiPath) -> _status.ApiError:
    return _status.not_found(path.rtype.group, path.rtype.plural, path.name or "")


class Api:
    """Serves the verbs of every modelled resource against one store."""

    def __init__(self, store: Store, logs: LogTexts) -> None:
        self.store = store
        self.logs = logs

    def serve(self, request: ApiRequest) -> Reply:
        """Dispatch one non-watch request.

        Raises:
            ApiError: whatever the real server would answer with instead of success.
        """
        path = request.path
        if path.subresource is not None and path.subresource not in _SUBRESOURCES[path.rtype]:
            raise _status.ApiError(
                404, "NotFound", "the server could not find the requested resource"
            )
        handler = self._route(request.method, path)
        if handler is None:
            raise _status.method_not_allowed()
        return handler(request)

    def _route(self, method: str, path: ApiPath) -> Callable[[ApiRequest], Reply] | None:
        if path.subresource == "log":
            return self.log if method == "GET" else None
        if path.name is None:
            routes = {
                "GET": self.list_objects,
                "POST": self.create,
                "DELETE": self.delete_collection,
            }
        else:
            routes = {
                "GET": self.get,
                "PUT": self.update,
                "PATCH": self.patch,
                "DELETE": self.delete,
            }
        return routes.get(method)

    def _current(self, path: ApiPath) -> JsonDict:
        obj = self.store.get(path.rtype, path.namespace, path.name or "")
        if obj is None:
            raise _not_found(path)
        return obj

    # -- create / read ------------------------------------------------------------------

    def create(self, request: ApiRequest) -> Reply:
        path = request.path
        namespace = path.namespace
        if path.rtype.namespaced and not self.store.namespace_exists(namespace or ""):
            raise _status.not_found("", "namespaces", namespace or "")
        obj = _objects.prepare_create(path.rtype, request.body, namespace)
        obj = _KIND_CREATE[path.rtype](obj)
        name = obj["metadata"]["name"]
        if self.store.get(path.rtype, namespace, name) is not None:
            raise _status.already_exists(path.rtype.group, path.rtype.plural, name)
        return Reply(201, self.store.insert(path.rtype, obj))

    def get(self, request: ApiRequest) -> Reply:
        return Reply(200, with_type(request.path.rtype, self._current(request.path)))

    def list_objects(self, request: ApiRequest) -> Reply:
        rtype = request.path.rtype
        labels = _selectors.parse_labels(request.query.get("labelSelector"))
        fields = _selectors.parse_fields(
            request.query.get("fieldSelector"), rtype.field_labels, rtype.kind
        )
        items = [
            {key: value for key, value in obj.items() if key not in ("apiVersion", "kind")}
            for obj in self.store.list_objects(rtype, request.path.namespace)
            if _selectors.matches(obj, labels, fields)
        ]
        metadata: JsonDict = {"resourceVersion": self.store.resource_version}
        items = _paginate(items, request.query, metadata)
        body = {
            "kind": rtype.list_kind,
            "apiVersion": rtype.api_version,
            "metadata": metadata,
            "items": items,
        }
        return Reply(200, body)

    def log(self, request: ApiRequest) -> Reply:
        pod = self._current(request.path)
        texts = self.logs.get((request.path.namespace or "", request.path.name or ""), {})
        return Reply(200, _pods.read_log(pod, texts, request.query))

    # -- update / patch -----------------------------------------------------------------

    def update(self, request: ApiRequest) -> Reply:
        current = self._current(request.path)
        return self._write(request.path, current, request.body)

    def patch(self, request: ApiRequest) -> Reply:
        current = self._current(request.path)
        patched = _patches.apply(request.content_type, current, request.body)
        return self._write(request.path, current, patched)

    def _write(self, path: ApiPath, current: JsonDict, body: Any) -> Reply:
        updated = _objects.prepare_update(path.rtype, current, body, path.subresource)
        if path.rtype is JOBS and path.subresource is None:
            _jobs.check_update(current, updated)
        # A real server records even a no-op patch (its managedFields change), so do we.
        return Reply(200, self.store.replace(path.rtype, updated))

    # -- delete -------------------------------------------------------------------------

    def delete(self, request: ApiRequest) -> Reply:
        current = self._current(request.path)
        options = _delete_options(request)
        _check_preconditions(request.path.rtype, current, options)
        return self._delete_object(request.path.rtype, current, options)

    def delete_collection(self, request: ApiRequest) -> Reply:
        rtype = request.path.rtype
        labels = _selectors.parse_labels(request.query.get("labelSelector"))
        fields = _selectors.parse_fields(
            request.query.get("fieldSelector"), rtype.field_labels, rtype.kind
        )
        options = _delete_options(request)
        deleted = [
            self._delete_object(rtype, obj, options).body
            for obj in self.store.list_objects(rtype, request.path.namespace)
            if _selectors.matches(obj, labels, fields)
        ]
        items = [
            item for item in deleted if isinstance(item, dict) and item.get("kind") != "Status"
        ]
        metadata = {"resourceVersion": self.store.resource_version}
        return Reply(
            200,
            {
                "kind": rtype.list_kind,
                "apiVersion": rtype.api_version,
                "metadata": metadata,
                "items": items,
            },
        )

    def _delete_object(self, rtype: ResourceType, obj: JsonDict, options: _DeleteOptions) -> Reply:
        if rtype is JOBS:
            return self._delete_job(obj, options)
        if rtype is NAMESPACES:
            return self._delete_namespace(obj)
        meta = obj["metadata"]
        # Pods answer with the deleted object (ReturnDeletedObject); no kubelet, so no grace period.
        return Reply(200, self.store.remove(rtype, meta.get("namespace"), meta["name"]))

    def _delete_job(self, job: JsonDict, options: _DeleteOptions) -> Reply:
        meta = job["metadata"]
        headers = {} if options.policy else {"Warning": JOB_DELETE_WARNING}
        policy = options.policy or "Orphan"  # batch/v1 keeps its pre-GC default
        pods = [
            pod for pod in self.store.list_objects(PODS, meta["namespace"]) if _jobs.owns(job, pod)
        ]
        if policy == "Background":
            self.store.remove(JOBS, meta["namespace"], meta["name"])
            self._remove_pods(pods)
            return Reply(200, _success(JOBS, job), headers)
        finalizer = "orphan" if policy == "Orphan" else "foregroundDeletion"
        marked = self._mark_deleting(job, finalizer)
        if policy == "Orphan":
            self._orphan_pods(pods, meta["uid"])
        else:
            self._remove_pods(pods)
        self.store.remove(JOBS, meta["namespace"], meta["name"])
        return Reply(200, marked, headers)

    def _mark_deleting(self, obj: JsonDict, finalizer: str) -> JsonDict:
        marked = copy.deepcopy(obj)
        meta = marked["metadata"]
        meta["deletionTimestamp"] = _objects.now()
        meta["deletionGracePeriodSeconds"] = 0
        meta["generation"] = meta.get("generation", 1) + 1  # setting deletionTimestamp counts
        meta["finalizers"] = [*(meta.get("finalizers") or []), finalizer]
        return self.store.replace(JOBS, marked)

    def _remove_pods(self, pods: list[JsonDict]) -> None:
        for pod in pods:
            self.store.remove(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _orphan_pods(self, pods: list[JsonDict], owner_uid: str) -> None:
        for pod in pods:
            refs = pod["metadata"].get("ownerReferences") or []
            kept = [ref for ref in refs if ref.get("uid") != owner_uid]
            if kept != refs:
                orphan = copy.deepcopy(pod)
                orphan["metadata"]["ownerReferences"] = kept
                if not kept:
                    del orphan["metadata"]["ownerReferences"]
                self.store.replace(PODS, orphan)

    def _delete_namespace(self, namespace: JsonDict) -> Reply:
        name = namespace["metadata"]["name"]
        for rtype in (JOBS, PODS):
            for obj in self.store.list_objects(rtype, name):
                self.store.remove(rtype, name, obj["metadata"]["name"])
        final = self.store.remove(NAMESPACES, None, name)
        final["metadata"]["deletionTimestamp"] = _objects.now()
        final["status"] = {"phase": "Terminating"}
        return Reply(200, final)


def namespace_defaults(obj: JsonDict) -> JsonDict:
    """What the real server fills into a new Namespace."""
    obj = copy.deepcopy(obj)
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    obj["spec"] = {"finalizers": ["kubernetes"]}
    obj["status"] = {"phase": "Active"}
    return obj


_KIND_CREATE: Mapping[ResourceType, Callable[[JsonDict], JsonDict]] = {
    JOBS: _jobs.prepare_create,
    PODS: _pods.prepare_create,
    NAMESPACES: namespace_defaults,
}


def _success(rtype: ResourceType, obj: JsonDict) -> JsonDict:
    """The Status a delete answers with when the object is gone at once (finalizeDelete)."""
    details = {
        "name": obj["metadata"]["name"],
        "group": rtype.group,
        "kind": rtype.plural,
        "uid": obj["metadata"]["uid"],
    }
    if not rtype.group:
        del details["group"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def _delete_options(request: ApiRequest) -> _DeleteOptions:
    """DeleteOptions from the body if there is one, else from the query (as the real server)."""
    if request.has_body:
        source: Mapping[str, Any] = request.body if isinstance(request.body, Mapping) else {}
        preconditions = source.get("preconditions") or {}
    else:
        source, preconditions = request.query, {}
    policy = source.get("propagationPolicy")
    orphan = source.get("orphanDependents")
    if policy is None and orphan is not None:
        policy = "Orphan" if str(orphan).lower() == "true" else "Background"
    if policy is not None and policy not in _POLICIES:
        supported = '"Foreground", "Background", "Orphan", "nil"'
        message = f'Unsupported value: "{policy}": supported values: {supported}'
        cause = _status.Cause("FieldValueNotSupported", message, "propagationPolicy")
        raise _status.invalid("meta.k8s.io", "DeleteOptions", "", [cause])
    return _DeleteOptions(policy, preconditions.get("uid"), preconditions.get("resourceVersion"))


def _check_preconditions(rtype: ResourceType, obj: JsonDict, options: _DeleteOptions) -> None:
    """As ``rest.BeforeDelete`` words it, naming the Kind where other conflicts name the plural."""
    meta = obj["metadata"]
    for label, wanted, actual, hint in (
        ("UID", options.uid, meta["uid"], "deleted and then recreated"),
        ("ResourceVersion", options.resource_version, meta["resourceVersion"], "modified"),
    ):
        if wanted is not None and wanted != actual:
            why = (
                f"the {label} in the precondition ({wanted}) does not match the {label} in record "
                f"({actual}). The object might have been {hint}"
            )
            raise _status.conflict(rtype.group, rtype.kind, meta["name"], why)


def _paginate(
    items: list[JsonDict], query: Mapping[str, str], metadata: JsonDict
) -> list[JsonDict]:
    """``limit``/``continue`` chunking; the token is opaque to clients, as on a real server."""
    try:
        start = (
            int(base64.urlsafe_b64decode(query["continue"]).decode())
            if query.get("continue")
            else 0
        )
        limit = int(query.get("limit") or 0)
    except ValueError:
        raise _status.bad_request("invalid continue token or limit") from None
    if limit <= 0:
        return items[start:]
    page = items[start : start + limit]
    rest = len(items) - start - len(page)
    if rest > 0:
        metadata["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
        metadata["remainingItemCount"] = rest
    return page
