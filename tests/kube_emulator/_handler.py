"""The HTTP front: a kmock ``KubernetesEmulator`` with a thin handler in front of it.

kmock's request pipeline cannot serve our resources faithfully: it parses every path
before any hook runs (and crashes on ``/api/v1/namespaces``), treats the official client's
``watch=True`` as a plain list (it only knows ``watch=true``), mutates objects before
reactions run, and has no PUT. So this subclass overrides the aiohttp entry point:
requests for jobs, pods and namespaces go to ``_operations`` (and watches are streamed
here); every other path (``/version``, discovery, other resources) still goes to kmock.
Token checks, injected faults and the request journal apply to both.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp.web
import kmock

from . import _discovery, _objects, _operations, _selectors, _status
from ._faults import Faults, RequestFacts
from ._resources import NAMESPACES, ApiPath, parse_path
from ._store import Store, Watcher

JsonDict = dict[str, Any]
WATCH_TIMEOUT = 1800.0
"""Seconds a watch without timeoutSeconds stays open (the real server picks 30-60 min)."""
_TRUE = frozenset({"1", "t", "true"})
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


class RecordedRequest(NamedTuple):
    """One served request, for assertions on how many API calls code made."""

    method: str
    path: str
    status: int


class _Entry:
    __slots__ = ("method", "path", "status")

    def __init__(self, method: str, path: str) -> None:
        self.method, self.path = method, path
        self.status: int | None = None


class Journal:
    """Requests in arrival order; a watch counts as served once its stream opens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []

    def begin(self, method: str, path: str) -> _Entry:
        entry = _Entry(method, path)
        with self._lock:
            self._entries.append(entry)
        return entry

    def snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return [
                RecordedRequest(e.method, e.path, e.status)
                for e in self._entries
                if e.status is not None
            ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class Settings:
    user: str
    """The user named in RBAC-style 403 messages."""
    token: str | None
    """The bearer token every request must carry; None accepts any request."""


def _verb(method: str, path: ApiPath, watching: bool) -> str:
    if method == "GET":
        return "watch" if watching else ("get" if path.name else "list")
    if method == "DELETE":
        return "delete" if path.name else "deletecollection"
    return _VERBS.get(method, method.lower())


def _decode(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError as error:
        raise _status.bad_request(f"couldn't get version/kind; json parse error: {error}") from None


def _posted_name(body: bytes) -> str | None:
    """The name in a create's body, for fault messages; a bad body is reported later."""
    try:
        decoded = json.loads(body) if body else None
    except ValueError:
        return None
    meta = decoded.get("metadata") if isinstance(decoded, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


_HEALTH = frozenset({"/readyz", "/livez", "/healthz"})


def _json_response(error: _status.ApiError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(error.body(), status=error.code, headers=dict(error.headers))


class EmulatorHandler(kmock.KubernetesEmulator):
    """kmock's emulator with jobs, pods and namespaces served by the corrected model."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.store = Store(self.objects)
        self.logs: _operations.LogTexts = {}
        self.api = _operations.Api(self.store, self.logs)
        self.faults = Faults()
        self.journal = Journal()
        self.internal_errors: list[Exception] = []

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        entry = self.journal.begin(raw_request.method, raw_request.path)
        response = await self._answer(raw_request, body, entry)
        if entry.status is None:
            entry.status = response.status
        return response

    async def _answer(
        self, raw_request: aiohttp.web.BaseRequest, body: bytes, entry: _Entry
    ) -> aiohttp.web.StreamResponse:
        query = {key: raw_request.query[key] for key in raw_request.query}
        path = parse_path(raw_request.path)
        try:
            facts = self._facts(raw_request.method, raw_request.path, path, query, body)
            delay = self.faults.take_delay(facts)
            if delay:
                await asyncio.sleep(delay)
            self._authenticate(raw_request.headers)
            error = self.faults.take_error(facts)
            if error is not None:
                raise error
            if path is None:
                return await self._fall_back(raw_request)
            return await self._serve(raw_request, path, query, body, entry)
        except _status.ApiError as error:
            return _json_response(error)
        # A bug in the emulator: answer like a server's internal error and keep it for the test.
        except Exception as error:
            self.internal_errors.append(error)
            return _json_response(_status.internal_error(f"kube emulator bug: {error!r}"))

    async def _fall_back(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # The health endpoints: the backend asks /readyz before it believes a 403.
        if raw_request.method == "GET" and raw_request.path.rstrip("/") in _HEALTH:
            return aiohttp.web.Response(text="ok")
        if (
            raw_request.method == "GET"
            and (document := _discovery.document(raw_request.path)) is not None
        ):
            return aiohttp.web.json_response(document)
        return await super().__call__(raw_request)

    def _authenticate(self, headers: Mapping[str, str]) -> None:
        token = self.settings.token
        if token is not None and headers.get("Authorization") != f"Bearer {token}":
            raise _status.unauthorized()

    def _facts(
        self,
        method: str,
        raw_path: str,
        path: ApiPath | None,
        query: Mapping[str, str],
        body: bytes,
    ) -> RequestFacts:
        if path is None:
            return RequestFacts(method, raw_path)
        name = path.name
        if name is None and method == "POST":
            name = _posted_name(body)
        watching = query.get("watch", "").lower() in _TRUE
        access = _status.Access(
            self.settings.user,
            _verb(method, path, watching),
            path.rtype.group,
            path.rtype.plural,
            path.subresource,
            path.namespace,
            path.name,
        )
        return RequestFacts(method, raw_path, access, path.rtype.kind, name)

    async def _serve(
        self,
        raw_request: aiohttp.web.BaseRequest,
        path: ApiPath,
        query: dict[str, str],
        body: bytes,
        entry: _Entry,
    ) -> aiohttp.web.StreamResponse:
        watching = query.get("watch", "").lower() in _TRUE
        if raw_request.method == "GET" and watching and path.subresource is None:
            return await self._watch(raw_request, path, query, entry)
        request = _operations.ApiRequest(
            method=raw_request.method,
            path=path,
            query=query,
            body=_decode(body),
            has_body=bool(body.strip()),
            content_type=raw_request.headers.get("Content-Type", "application/json"),
        )
        reply = self.api.serve(request)
        if isinstance(reply.body, str):
            return aiohttp.web.Response(
                text=reply.body, status=reply.status, headers=dict(reply.headers)
            )
        return aiohttp.web.json_response(
            reply.body, status=reply.status, headers=dict(reply.headers)
        )

    async def _watch(
        self,
        raw_request: aiohttp.web.BaseRequest,
        path: ApiPath,
        query: dict[str, str],
        entry: _Entry,
    ) -> aiohttp.web.StreamResponse:
        rtype = path.rtype
        fields = _selectors.parse_fields(query.get("fieldSelector"), rtype.field_labels, rtype.kind)
        if path.name is not None:  # the legacy /jobs/NAME?watch=true form
            fields += (_selectors.Requirement("metadata.name", "=", (path.name,)),)
        watcher = Watcher(
            rtype, path.namespace, _selectors.parse_labels(query.get("labelSelector")), fields
        )
        try:
            initial, live = self.store.subscribe(watcher, query.get("resourceVersion")), True
        except _status.ApiError as error:
            # A watch from a forgotten resourceVersion opens, then sends one ERROR event (410).
            initial, live = [{"type": "ERROR", "object": error.body()}], False
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        try:
            await response.prepare(raw_request)
            entry.status = 200
            await self._stream(
                response,
                watcher,
                initial,
                live,
                float(query.get("timeoutSeconds") or WATCH_TIMEOUT),
            )
        except ConnectionResetError:
            pass  # the client went away; nothing left to tell it
        finally:
            self.store.unsubscribe(watcher)
        return response

    async def _stream(
        self,
        response: aiohttp.web.StreamResponse,
        watcher: Watcher,
        initial: list[JsonDict],
        live: bool,
        timeout: float,
    ) -> None:
        for event in initial:
            await response.write(json.dumps(event).encode() + b"\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while live:
            try:
                change = await asyncio.wait_for(watcher.queue.get(), max(deadline - loop.time(), 0))
            except TimeoutError:
                break
            if change is None:
                break
            await response.write(json.dumps(change).encode() + b"\n")
        await response.write_eof()

    def reset(self) -> None:
        """Back to a fresh server: only namespace ``default``, no faults, logs or journal."""
        self.store.clear()
        self.logs.clear()
        self.faults.clear()
        self.journal.clear()
        self.internal_errors.clear()
        self._requests.clear()
        self.add_namespace("default")

    def add_namespace(self, name: str) -> JsonDict:
        if self.store.namespace_exists(name):
            raise _status.already_exists("", "namespaces", name)
        namespace = _operations.namespace_defaults(
            _objects.prepare_create(NAMESPACES, {"metadata": {"name": name}}, None)
        )
        return self.store.insert(NAMESPACES, namespace)

    def set_log(self, namespace: str, pod: str, container: str | None, text: str) -> None:
        self.logs.setdefault((namespace, pod), {})[container] = text

    def close_streams(self) -> None:
        self.store.close_watchers()
