"""``/version`` and API discovery documents for the modelled resources.

The official client asks for ``/version/`` and ``/apis/batch/v1/`` with a trailing slash,
which kmock 0.8 does not match (404), and kmock's emulator answers ``/apis/batch/v1`` from
its list handler instead of its discovery handler. These documents are small and fixed, so
the emulator serves them itself, in the shapes the real server uses.
"""

from __future__ import annotations

from typing import Any

from ._resources import MODELLED, ResourceType

JsonDict = dict[str, Any]
SERVER_VERSION = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "gitVersion": "v1.37.2-jobferry-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.26",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
_SUBRESOURCES: dict[str, list[tuple[str, list[str]]]] = {
    "jobs": [("status", ["get", "patch", "update"])],
    "pods": [("status", ["get", "patch", "update"]), ("log", ["get"])],
    "namespaces": [("status", ["get", "patch", "update"])],
}


def _resource_entries(rtype: ResourceType) -> list[JsonDict]:
    main: JsonDict = {
        "name": rtype.plural,
        "singularName": rtype.kind.lower(),
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": _VERBS,
    }
    subresources = [
        {
            "name": f"{rtype.plural}/{sub}",
            "singularName": "",
            "namespaced": rtype.namespaced,
            "kind": rtype.kind,
            "verbs": verbs,
        }
        for sub, verbs in _SUBRESOURCES.get(rtype.plural, [])
    ]
    return [main, *subresources]


def _group_version(group: str, version: str) -> JsonDict:
    return {"groupVersion": f"{group}/{version}", "version": version}


def document(path: str) -> JsonDict | None:
    """The discovery document at ``path`` (trailing slash or not), or None."""
    key = "/" + path.strip("/")
    groups = sorted({rtype.group for rtype in MODELLED if rtype.group})
    if key == "/version":
        return dict(SERVER_VERSION)
    if key == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if key == "/apis":
        listed = [
            {
                "name": g,
                "versions": [_group_version(g, "v1")],
                "preferredVersion": _group_version(g, "v1"),
            }
            for g in groups
        ]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}
    for group in groups:
        if key == f"/apis/{group}":
            preferred = _group_version(group, "v1")
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": group,
                "versions": [preferred],
                "preferredVersion": preferred,
            }
    for group, prefix in [("", "/api/v1")] + [(g, f"/apis/{g}/v1") for g in groups]:
        if key == prefix:
            entries = [
                entry
                for rtype in MODELLED
                if rtype.group == group
                for entry in _resource_entries(rtype)
            ]
            group_version = f"{group}/v1" if group else "v1"
            return {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": entries,
            }
    return None
