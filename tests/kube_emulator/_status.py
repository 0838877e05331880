"""Kubernetes ``Status`` errors worded exactly as the real API server words them.

Worker code branches on ``ApiException.status`` and on the ``reason`` inside the body
(``AlreadyExists`` vs ``Conflict`` are both 409), and logs the ``message``. kmock answers
with its own reasons ("Object Already Exists") and help texts, so a test against it would
teach the code the wrong strings. The builders below follow
``k8s.io/apimachinery/pkg/api/errors`` (``NewNotFound``, ``NewAlreadyExists``,
``NewConflict``, ``NewForbidden``, ``NewInvalid``, ...) field for field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]

CONFLICT_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


@dataclass(frozen=True)
class Cause:
    """One field error of a 422 Invalid answer (``metav1.StatusCause``)."""

    reason: str
    """The cause type, e.g. ``FieldValueRequired``, ``FieldValueInvalid``."""
    message: str
    """The error body without the field, e.g. ``Required value``."""
    field: str
    """The JSON path of the field, e.g. ``spec.template.spec.containers``."""

    def as_json(self) -> JsonDict:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class ApiError(Exception):
    """An error answer of the emulated API server: HTTP code plus a ``Status`` body."""

    code: int
    reason: str
    message: str
    details: JsonDict | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> JsonDict:
        status: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:  # an internal error from deep inside the server may carry none
            status["reason"] = self.reason
        if self.details is not None:
            status["details"] = self.details
        status["code"] = self.code
        return status


def _details(group: str, kind: str, name: str | None, **extra: Any) -> JsonDict:
    # Go's omitempty drops empty strings, so an empty group or name is left out entirely.
    details: JsonDict = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details.update({key: value for key, value in extra.items() if value})
    return details


def group_resource(group: str, resource: str) -> str:
    """``jobs.batch`` for grouped resources, bare ``pods`` for the core group."""
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{group_resource(group, resource)} "{name}" not found',
        _details(group, resource, name),
    )


def already_exists(group: str, resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{group_resource(group, resource)} "{name}" already exists',
        _details(group, resource, name),
    )


def conflict(group: str, resource: str, name: str, why: str = CONFLICT_MODIFIED) -> ApiError:
    """409 Conflict; ``resource`` is a plural, or a Kind where the server passes one."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {group_resource(group, resource)} "{name}": {why}',
        _details(group, resource, name),
    )


@dataclass(frozen=True)
class Access:
    """What an authorizer is asked: who wants to do which verb on what (RBAC attributes)."""

    user: str
    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None


def forbidden(access: Access) -> ApiError:
    """The RBAC denial exactly as ``responsewriters.ForbiddenStatusError`` words it."""
    resource = access.resource
    if access.subresource:
        resource = f"{resource}/{access.subresource}"
    scope = f'in the namespace "{access.namespace}"' if access.namespace else "at the cluster scope"
    why = (
        f'User "{access.user}" cannot {access.verb} resource "{resource}" '
        f'in API group "{access.group}" {scope}'
    )
    target = group_resource(access.group, access.resource)
    message = (
        f'{target} "{access.name}" is forbidden: {why}'
        if access.name
        else (f"{target} is forbidden: {why}")
    )
    return ApiError(403, "Forbidden", message, _details(access.group, access.resource, access.name))


def invalid(group: str, kind: str, name: str, causes: Sequence[Cause]) -> ApiError:
    """A 422 with one cause per field error; the message aggregates them like Go does."""
    qualified = f"{kind}.{group}" if group else kind
    if not causes:
        message = f'{qualified} "{name}" is invalid'
    elif len(causes) == 1:
        message = f'{qualified} "{name}" is invalid: {causes[0]}'
    else:
        message = f'{qualified} "{name}" is invalid: [{", ".join(str(c) for c in causes)}]'
    details = _details(group, kind, name, causes=[cause.as_json() for cause in causes])
    return ApiError(422, "Invalid", message, details)


def internal_bare(message: str) -> ApiError:
    """A 500 with no reason, as the server answers some request errors raised in storage."""
    return ApiError(500, "", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def unsupported_media_type() -> ApiError:
    return ApiError(415, "UnsupportedMediaType", "415: Unsupported Media Type", {})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def internal_error(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
        {"retryAfterSeconds": retry_after},
        {"Retry-After": str(retry_after)},
    )


def service_unavailable(
    message: str = "the server is currently unable to handle the request",
) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def timeout(message: str = "request did not complete within the allotted timeout") -> ApiError:
    return ApiError(504, "Timeout", f"Timeout: {message}", {"retryAfterSeconds": 1})


# The reason the real server puts next to each code when nothing more specific applies.
DEFAULT_REASONS: Mapping[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
