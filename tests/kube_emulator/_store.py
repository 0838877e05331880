"""In-memory objects with resourceVersions, and the watch fan-out that follows them.

Objects live in kmock's ``ObjectsArray``, so every version an object went through stays
readable (``KubeEmulator.history``). What kmock does not give, and this adds: a global
``resourceVersion`` counter stamped on every write, a change log so a watch can resume from
a resourceVersion (or get 410 Expired like on a real server), and watches that honour the
namespace and both selectors, including an object moving into or out of a label selector.

Every method runs on the emulator's event loop thread and never awaits, so each call is
atomic without locks; the test thread reaches it only through ``KubeEmulator``.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any

import kmock

from . import _selectors, _status
from ._resources import NAMESPACES, ResourceType

JsonDict = dict[str, Any]
MAX_CHANGES = 10_000
"""Changes kept for watch resumption; older resourceVersions get 410 Expired."""


@dataclass(frozen=True)
class Change:
    """One write: ``old`` is None for ADDED; for DELETED ``new`` is the final object."""

    rv: int
    rtype: ResourceType
    type: str
    old: JsonDict | None
    new: JsonDict


@dataclass(eq=False)
class Watcher:
    """One open watch request: what it selects, and the queue its events go to."""

    rtype: ResourceType
    namespace: str | None
    labels: tuple[_selectors.Requirement, ...] = ()
    fields: tuple[_selectors.Requirement, ...] = ()
    queue: asyncio.Queue[JsonDict | None] = field(default_factory=asyncio.Queue)

    def sees(self, obj: JsonDict | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return _selectors.matches(obj, self.labels, self.fields)

    def event_for(self, change: Change) -> JsonDict | None:
        """The event this watcher gets, if any: selector moves become ADDED/DELETED."""
        was, now = self.sees(change.old), self.sees(change.new)
        if change.type == "DELETED":
            kind = "DELETED" if was or now else None
        elif was and now:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        else:
            kind = "DELETED" if was else None
        return None if kind is None else {"type": kind, "object": copy.deepcopy(change.new)}


def with_type(rtype: ResourceType, obj: JsonDict) -> JsonDict:
    """A copy with apiVersion and kind first, as single reads and watch events carry them."""
    rest = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind")}
    return {"apiVersion": rtype.api_version, "kind": rtype.kind, **copy.deepcopy(rest)}


class Store:
    """Objects by (type, namespace, name), plus resourceVersions and watchers."""

    def __init__(self, objects: kmock.ObjectsArray) -> None:
        self._objects = objects
        self._rv = 0
        self._changes: list[Change] = []
        self._changes_since = 0
        self._watchers: set[Watcher] = set()

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    @staticmethod
    def _key(rtype: ResourceType, namespace: str | None, name: str) -> kmock.ObjectKey:
        return (rtype.kmock_resource, namespace if rtype.namespaced else None, name)

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> JsonDict | None:
        """A deep copy of the live object, or None."""
        key = self._key(rtype, namespace, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def history(
        self, rtype: ResourceType, namespace: str | None, name: str
    ) -> list[JsonDict | None]:
        """Every stored version, oldest first; None marks a deletion."""
        key = self._key(rtype, namespace, name)
        if key not in self._objects:
            return []
        versions = self._objects[key].history
        return [None if version is None else copy.deepcopy(version.raw) for version in versions]

    def list_objects(self, rtype: ResourceType, namespace: str | None = None) -> list[JsonDict]:
        """Deep copies of the live objects, sorted by namespace and name as etcd returns them."""
        found = [
            obj.raw
            for (resource, obj_namespace, _), obj in self._objects.items()
            if resource == rtype.kmock_resource
            and not obj.deleted
            and (namespace is None or obj_namespace == namespace)
        ]
        found.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return copy.deepcopy(found)

    def namespace_exists(self, name: str) -> bool:
        return self.get(NAMESPACES, None, name) is not None

    def _stamp(self, obj: JsonDict) -> JsonDict:
        self._rv += 1
        stamped = copy.deepcopy(obj)
        stamped["metadata"]["resourceVersion"] = str(self._rv)
        return stamped

    def _record(self, rtype: ResourceType, kind: str, old: JsonDict | None, new: JsonDict) -> None:
        change = Change(self._rv, rtype, kind, old, with_type(rtype, new))
        self._changes.append(change)
        if len(self._changes) > MAX_CHANGES:
            self._changes_since = self._changes.pop(0).rv
        for watcher in list(self._watchers):
            event = watcher.event_for(change) if watcher.rtype == rtype else None
            if event is not None:
                watcher.queue.put_nowait(event)

    def insert(self, rtype: ResourceType, obj: JsonDict) -> JsonDict:
        """Store a new object (the caller checked it does not exist); returns the stored copy."""
        meta = obj["metadata"]
        key = self._key(rtype, meta.get("namespace"), meta["name"])
        stored = self._stamp(obj)
        if key in self._objects:
            self._objects[key].history.append(stored)  # re-created after a deletion
        else:
            self._objects[key] = stored
        self._record(rtype, "ADDED", None, stored)
        return copy.deepcopy(stored)

    def replace(self, rtype: ResourceType, obj: JsonDict) -> JsonDict:
        """Store a new version of an existing object; returns the stored copy."""
        meta = obj["metadata"]
        key = self._key(rtype, meta.get("namespace"), meta["name"])
        old = self._objects[key].raw
        stored = self._stamp(obj)
        self._objects[key].history.append(stored)
        self._record(rtype, "MODIFIED", old, stored)
        return copy.deepcopy(stored)

    def remove(self, rtype: ResourceType, namespace: str | None, name: str) -> JsonDict:
        """Delete an existing object; returns its final state (with the deletion's version)."""
        key = self._key(rtype, namespace, name)
        old = self._objects[key].raw
        final = self._stamp(old)
        self._objects[key].delete()
        self._record(rtype, "DELETED", old, final)
        return copy.deepcopy(final)

    def clear(self) -> None:
        """Forget every object and change; resourceVersions keep counting up."""
        for key in list(self._objects):
            del self._objects[key]
        self._changes.clear()
        self._changes_since = self._rv

    def compact(self) -> None:
        """Forget the change log, as etcd compaction does: older versions get 410 Expired."""
        self._changes.clear()
        self._changes_since = self._rv

    def subscribe(self, watcher: Watcher, since: str | None) -> list[JsonDict]:
        """Register a watcher; returns the events it must get first.

        Without a resourceVersion (or with "0") that is an ADDED per current object, as on a
        real server; with one, the changes after it, or 410 Expired if they are forgotten.
        """
        if since in (None, "", "0"):
            objects = self.list_objects(watcher.rtype, watcher.namespace)
            initial = [
                {"type": "ADDED", "object": with_type(watcher.rtype, obj)}
                for obj in objects
                if watcher.sees(obj)
            ]
        else:
            initial = self._replay(watcher, _parse_rv(since))
        self._watchers.add(watcher)
        return initial

    def _replay(self, watcher: Watcher, since: int) -> list[JsonDict]:
        if since < self._changes_since:
            raise _status.expired(f"too old resource version: {since} ({self._changes_since + 1})")
        events = [
            watcher.event_for(change)
            for change in self._changes
            if change.rv > since and change.rtype == watcher.rtype
        ]
        return [event for event in events if event is not None]

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_watchers(self) -> None:
        """End every open watch stream (on shutdown)."""
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)


def _parse_rv(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        raise _status.bad_request(f'invalid resource version "{text}"') from None
