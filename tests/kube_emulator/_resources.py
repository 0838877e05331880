"""The resource types the emulator models, and how an API path names one of them.

kmock parses paths itself, but its parser breaks on the namespace collection
(``GET /api/v1/namespaces`` fails with a 500) and reads ``pods/x/log`` as a plain read of the
pod. The emulator needs the exact (type, namespace, name, subresource) of every request it
serves, so it parses the few paths it models here and leaves every other path to kmock.
"""

from __future__ import annotations

from dataclasses import dataclass

import kmock


@dataclass(frozen=True)
class ResourceType:
    """One served resource, with the names the real server uses in bodies and errors."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    field_labels: frozenset[str]
    """Field-selector labels the real server supports beyond metadata.name/namespace."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def kmock_resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)


JOBS = ResourceType("batch", "v1", "jobs", "Job", True, frozenset({"status.successful"}))
PODS = ResourceType(
    "",
    "v1",
    "pods",
    "Pod",
    True,
    frozenset(
        {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        }
    ),
)
NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", False, frozenset({"status.phase"}))
MODELLED = (JOBS, PODS, NAMESPACES)


@dataclass(frozen=True)
class ApiPath:
    """What a request path addresses: a collection (no name) or one object."""

    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def _find(group: str, version: str, plural: str) -> ResourceType | None:
    for rtype in MODELLED:
        if (rtype.group, rtype.version, rtype.plural) == (group, version, plural):
            return rtype
    return None


def parse_path(path: str) -> ApiPath | None:
    """Parse ``/api/v1/...`` or ``/apis/G/V/...``; None if the emulator does not model it."""
    parts = [part for part in path.split("/") if part]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    rtype = _find(group, version, rest[0])
    if rtype is None:
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if rtype.namespaced and name is not None and namespace is None:
        return None  # /apis/batch/v1/jobs/NAME does not exist on a real server either
    if not rtype.namespaced and namespace is not None:
        return None
    return ApiPath(rtype, namespace, name, subresource)
