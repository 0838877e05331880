"""Faults a test injects: the next N matching requests fail, a verb is forbidden, or slow.

kmock can attach a reaction to a request, but its emulator applies a create, patch or
delete to its objects before any reaction runs, so an injected 403 on create would still
store the Job. Faults here are decided before the request touches any object, and the
error bodies come from ``_status`` so they read like the real server's: a 403 names the
user, verb, resource, API group and namespace exactly as RBAC does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from . import _status


@dataclass(frozen=True)
class RequestFacts:
    """What faults match on; ``access`` is None for paths the emulator does not model."""

    method: str
    path: str
    access: _status.Access | None = None
    kind: str | None = None
    object_name: str | None = None
    """The name in the URL, or in the body of a create."""


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    status: int
    remaining: int
    reason: str | None
    message: str | None
    causes: tuple[_status.Cause, ...]
    retry_after: int | None


@dataclass
class _Delay:
    method: str
    path: re.Pattern[str]
    seconds: float
    remaining: int


@dataclass(frozen=True)
class _Rule:
    verb: str
    plural: str
    group: str | None
    subresource: str | None
    namespace: str | None

    def matches(self, access: _status.Access) -> bool:
        return (
            self.verb in ("*", access.verb)
            and self.plural in ("*", access.resource)
            and (self.group is None or self.group == access.group)
            and (self.plural == "*" or self.subresource == access.subresource)
            and (self.namespace is None or self.namespace == access.namespace)
        )


def _parse_rule(verb: str, resource: str, namespace: str | None) -> _Rule:
    """``jobs``, ``jobs.batch``, ``jobs/status``, ``pods/log`` or ``*``."""
    name, _, subresource = resource.partition("/")
    plural, _, group = name.partition(".")
    return _Rule(verb.lower(), plural, group or None, subresource or None, namespace)


def _method_matches(wanted: str, method: str) -> bool:
    return wanted in ("*", method.upper())


def _default_error(
    status: int, facts: RequestFacts, causes: Sequence[_status.Cause]
) -> _status.ApiError:
    access = facts.access
    group = access.group if access else ""
    resource = access.resource if access else ""
    name = facts.object_name or ""
    if status == 403 and access is not None:
        return _status.forbidden(access)
    if status == 404 and access is not None:
        return _status.not_found(group, resource, name)
    if status == 409 and access is not None:
        return _status.conflict(group, resource, name)
    if status == 422:
        default = (
            _status.Cause("FieldValueInvalid", "Invalid value: injected by the test", "spec"),
        )
        return _status.invalid(group, facts.kind or resource, name, causes or default)
    builders: dict[int, Callable[[], _status.ApiError]] = {
        401: _status.unauthorized,
        429: lambda: _status.too_many_requests(1),
        500: lambda: _status.internal_error("injected by the test"),
        503: _status.service_unavailable,
        504: _status.timeout,
    }
    if status in builders:
        return builders[status]()
    reason = _status.DEFAULT_REASONS.get(status, "Unknown")
    return _status.ApiError(status, reason, f"injected failure: HTTP {status}")


def _build_error(failure: _Failure, facts: RequestFacts) -> _status.ApiError:
    error = _default_error(failure.status, facts, failure.causes)
    if failure.reason is not None:
        error = replace(error, reason=failure.reason)
    if failure.message is not None:
        error = replace(error, message=failure.message)
    if failure.retry_after is not None:
        details = dict(error.details or {}, retryAfterSeconds=failure.retry_after)
        headers = dict(error.headers, **{"Retry-After": str(failure.retry_after)})
        error = replace(error, details=details, headers=headers)
    return error


@dataclass
class Faults:
    """The injected faults of one emulator; used on its event loop thread only."""

    failures: list[_Failure] = field(default_factory=list)
    delays: list[_Delay] = field(default_factory=list)
    rules: list[_Rule] = field(default_factory=list)

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int,
        reason: str | None,
        message: str | None,
        causes: Sequence[Mapping[str, str]],
        retry_after: int | None,
    ) -> None:
        parsed = tuple(
            _status.Cause(
                c.get("reason", "FieldValueInvalid"), c.get("message", ""), c.get("field", "")
            )
            for c in causes
        )
        failure = _Failure(
            method.upper(),
            re.compile(path_regex),
            status,
            times,
            reason,
            message,
            parsed,
            retry_after,
        )
        self.failures.append(failure)

    def delay_next(self, method: str, path_regex: str, seconds: float, times: int) -> None:
        self.delays.append(_Delay(method.upper(), re.compile(path_regex), seconds, times))

    def forbid(self, verb: str, resource: str, namespace: str | None) -> None:
        self.rules.append(_parse_rule(verb, resource, namespace))

    def allow(self, verb: str, resource: str, namespace: str | None) -> None:
        rule = _parse_rule(verb, resource, namespace)
        self.rules = [existing for existing in self.rules if existing != rule]

    def clear(self) -> None:
        self.failures.clear()
        self.delays.clear()
        self.rules.clear()

    def take_delay(self, facts: RequestFacts) -> float:
        """Seconds to stall this request; consumes one use of the first matching delay."""
        for delay in self.delays:
            if _method_matches(delay.method, facts.method) and delay.path.search(facts.path):
                delay.remaining -= 1
                if delay.remaining <= 0:
                    self.delays.remove(delay)
                return delay.seconds
        return 0.0

    def take_error(self, facts: RequestFacts) -> _status.ApiError | None:
        """The error to answer with, if any: one-shot failures first, then forbid rules."""
        for failure in self.failures:
            if _method_matches(failure.method, facts.method) and failure.path.search(facts.path):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.failures.remove(failure)
                return _build_error(failure, facts)
        access = facts.access
        if access is not None and any(rule.matches(access) for rule in self.rules):
            return _status.forbidden(access)
        return None
