"""The three PATCH formats a real server accepts, so PATCH bodies mean what they mean there.

The official client sends a dict body as ``application/strategic-merge-patch+json`` and a
list body as ``application/json-patch+json``. kmock merges any dict into the object and
also applies ``/status`` patches to the whole object (a status patch can change the spec).
Here: JSON merge patch (RFC 7386), JSON patch (RFC 6902, via ``jsonpatch``) and a strategic
merge patch that merges the lists Kubernetes declares with a merge key (``conditions`` by
``type``, ``containers`` by ``name``, ...). Patch directives (``$patch``,
``$deleteFromPrimitiveList``, ...) and server-side apply are not emulated.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch  # type: ignore[import-untyped]

from . import _status

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
ACCEPTED = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

# patchMergeKey of the list fields that jobs and pods carry (from k8s.io/api struct tags).
_MERGE_KEYS: Mapping[str, str] = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumes": "name",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "tolerations": "key",
}
# Lists of scalars with patchStrategy=merge: a patch adds its values to the existing ones.
_SET_LISTS = frozenset({"finalizers"})


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, Mapping) or key not in item:
            merged.append(copy.deepcopy(item))
            continue
        index = next(
            (
                i
                for i, old in enumerate(merged)
                if isinstance(old, Mapping) and old.get(key) == item[key]
            ),
            None,
        )
        if index is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def _merge_field(name: str, current: Any, value: Any) -> Any:
    if isinstance(value, list) and isinstance(current, list):
        if name in _MERGE_KEYS:
            return _merge_keyed_list(current, value, _MERGE_KEYS[name])
        if name in _SET_LISTS:
            return current + [item for item in value if item not in current]
    if isinstance(value, Mapping):
        return strategic_merge_patch(current, value)
    return copy.deepcopy(value)


def strategic_merge_patch(target: Any, patch: Mapping[str, Any]) -> Any:
    """A merge patch that merges the Kubernetes lists declared with a merge key."""
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_field(key, result.get(key), value)
    return result


def _json_patch(target: Mapping[str, Any], operations: Any) -> Any:
    if not isinstance(operations, list):
        raise _status.bad_request(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    try:
        return jsonpatch.apply_patch(copy.deepcopy(dict(target)), operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        # The real server answers an inapplicable JSON patch with this bare 422.
        message = "the server rejected our request due to an error in our request"
        raise _status.ApiError(422, "Invalid", message, {}) from error


def apply(content_type: str, target: Mapping[str, Any], body: Any) -> dict[str, Any]:
    """Apply a PATCH body of the given media type; an unknown type is a 415 as on a real server."""
    media = content_type.split(";")[0].strip().lower()
    if media == JSON_PATCH:
        patched = _json_patch(target, body)
    elif media in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        if not isinstance(body, Mapping):
            raise _status.bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        merge = merge_patch if media == MERGE_PATCH else strategic_merge_patch
        patched = merge(target, body)
    elif media == APPLY_PATCH:
        # Server-side apply needs managed fields: deliberately left out of the emulator.
        raise _status.unsupported_media_type()
    else:
        raise _status.unsupported_media_type()
    if not isinstance(patched, dict):
        raise _status.ApiError(422, "Invalid", "the patch turned the object into a non-object")
    return patched
