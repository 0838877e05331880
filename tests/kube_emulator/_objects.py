"""What the real server does to every object it writes, whatever its kind.

kmock stores a created body as sent: no uid, no creationTimestamp, no resourceVersion, no
namespace, no generateName, no check that the namespace exists. Worker code reads those
fields (the uid for ownerReferences and delete preconditions, the generated name to find
the Job again), so the emulator fills and checks them the way ``rest.BeforeCreate`` and
``rest.BeforeUpdate`` do.
"""

from __future__ import annotations

import copy
import datetime
import json
import random
import re
import uuid
from collections.abc import Mapping
from typing import Any

from . import _status
from ._resources import ResourceType

JsonDict = dict[str, Any]

# k8s.io/apimachinery/pkg/util/rand: no vowels, no look-alike digits.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character "
    "(e.g. 'example.com', regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


def now() -> str:
    """An RFC 3339 timestamp with second precision, as in metadata.creationTimestamp."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _ in range(length))


def quote(value: Any) -> str:
    """Render a value the way Go's field errors quote it."""
    return json.dumps(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def name_causes(name: str) -> list[_status.Cause]:
    """metadata.name errors for a DNS-1123 subdomain name (jobs, pods, namespaces)."""
    causes: list[_status.Cause] = []
    if len(name) > 253:
        causes.append(
            _status.Cause(
                "FieldValueTooLong", "Too long: may not be more than 253 bytes", "metadata.name"
            )
        )
    if not _DNS1123_SUBDOMAIN.match(name):
        causes.append(
            _status.Cause(
                "FieldValueInvalid",
                f"Invalid value: {quote(name)}: {_DNS1123_SUBDOMAIN_MESSAGE}",
                "metadata.name",
            )
        )
    return causes


def _check_identity(rtype: ResourceType, body: Any, namespace: str | None) -> JsonDict:
    # These are decoding and request errors on a real server: 400, before any validation.
    if not isinstance(body, Mapping):
        raise _status.bad_request(f"the body of the request is not a {rtype.kind} object")
    if (
        body.get("kind", rtype.kind) != rtype.kind
        or body.get("apiVersion", rtype.api_version) != rtype.api_version
    ):
        raise _status.bad_request(
            f"the API version in the data ({body.get('apiVersion')}) does not match the expected "
            f"API version ({rtype.api_version})"
        )
    obj = copy.deepcopy(dict(body))
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise _status.bad_request("metadata must be an object")
    if rtype.namespaced and meta.get("namespace", namespace) != namespace:
        raise _status.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    return obj


def _name_for_create(rtype: ResourceType, meta: JsonDict) -> str:
    name = meta.get("name") or ""
    if not name and meta.get("generateName"):
        name = f"{meta['generateName']}{random_suffix()}"
    if not name:
        cause = _status.Cause(
            "FieldValueRequired",
            "Required value: name or generateName is required",
            "metadata.name",
        )
        raise _status.invalid(rtype.group, rtype.kind, "", [cause])
    return str(name)


def prepare_create(rtype: ResourceType, body: Any, namespace: str | None) -> JsonDict:
    """The object as a real server would store it, before kind-specific defaults.

    Raises:
        ApiError: 400 for a mismatched kind or namespace, 500 for a set resourceVersion,
            422 for a missing or malformed name.
    """
    obj = _check_identity(rtype, body, namespace)
    meta = obj["metadata"]
    if meta.get("resourceVersion"):
        raise _status.internal_bare("resourceVersion should not be set on objects to be created")
    name = _name_for_create(rtype, meta)
    causes = name_causes(name)
    if causes:
        raise _status.invalid(rtype.group, rtype.kind, name, causes)
    for system_field in (
        "uid",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ):
        meta.pop(system_field, None)
    meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now())
    if rtype.namespaced:
        meta["generation"] = 1  # jobs and pods count spec changes; namespaces do not
    if rtype.namespaced:
        meta["namespace"] = namespace
    obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
    return obj


def _check_update_identity(rtype: ResourceType, current: JsonDict, obj: JsonDict) -> None:
    meta, old_meta = obj["metadata"], current["metadata"]
    if meta.get("name") != old_meta["name"]:
        raise _status.bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL "
            f"({old_meta['name']})"
        )
    expected = meta.get("resourceVersion")
    if expected and expected != old_meta["resourceVersion"]:
        raise _status.conflict(rtype.group, rtype.plural, old_meta["name"])


def prepare_update(
    rtype: ResourceType, current: JsonDict, body: Any, subresource: str | None
) -> JsonDict:
    """The new version of ``current`` after a PUT/PATCH of the object or its ``/status``.

    The main resource ignores status changes and the status subresource ignores everything
    but status, as the real status strategies do; system metadata cannot change.
    """
    obj = _check_identity(rtype, body, current["metadata"].get("namespace"))
    _check_update_identity(rtype, current, obj)
    if subresource == "status":
        updated = copy.deepcopy(current)
        updated["status"] = obj.get("status", {})
        return updated
    obj["status"] = copy.deepcopy(current.get("status", {}))
    meta, old_meta = obj["metadata"], current["metadata"]
    for system_field in (
        "uid",
        "creationTimestamp",
        "namespace",
        "deletionTimestamp",
        "generation",
    ):
        if system_field in old_meta:
            meta[system_field] = old_meta[system_field]
        else:
            meta.pop(system_field, None)
    if obj.get("spec") != current.get("spec"):
        meta["generation"] = old_meta.get("generation", 1) + 1
    obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
    return obj
