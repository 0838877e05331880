"""Label and field selectors with the real server's semantics.

kmock 0.8 ignores ``labelSelector`` altogether (a list for ``a=c`` returns objects labelled
``a=b``), so a worker that finds its Jobs by label would pass against it for the wrong
reason. This module implements the selector grammar of ``k8s.io/apimachinery/pkg/labels``:
``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x,y)``, ``a``, ``!a``, ``a>1``,
``a<1``, comma-joined; and the equality-only grammar of field selectors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _status

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_NOT_EXISTS = re.compile(rf"^\s*!\s*(?P<key>{_KEY})\s*$")
_EXISTS = re.compile(rf"^\s*(?P<key>{_KEY})\s*$")
_SET = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQUALITY = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_ORDER = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>[<>])\s*(?P<value>-?[0-9]+)\s*$")
_FIELD = re.compile(r"^\s*(?P<key>[A-Za-z0-9.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*$")


@dataclass(frozen=True)
class Requirement:
    """One comma-separated term of a selector."""

    key: str
    op: str
    """One of: ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``, ``>``, ``<``."""
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key, "")
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        return present and _compare(self.op, value, int(self.values[0]))


def _compare(op: str, value: str, bound: int) -> bool:
    try:
        number = int(value)
    except ValueError:
        return False
    return number > bound if op == ">" else number < bound


def _split_terms(text: str) -> list[str]:
    # Commas inside "in (a,b)" belong to the term; only top-level commas separate terms.
    terms: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    terms.append(text[start:])
    return terms


def _parse_label_term(term: str) -> Requirement:
    if match := _NOT_EXISTS.match(term):
        return Requirement(match["key"], "!")
    if match := _SET.match(term):
        values = tuple(value.strip() for value in match["values"].split(","))
        return Requirement(match["key"], match["op"], values)
    if match := _EQUALITY.match(term):
        op = "!=" if match["op"] == "!=" else "="
        return Requirement(match["key"], op, (match["value"],))
    if match := _ORDER.match(term):
        return Requirement(match["key"], match["op"], (match["value"],))
    if match := _EXISTS.match(term):
        return Requirement(match["key"], "exists")
    raise _status.bad_request(f"unable to parse requirement: {term.strip()!r}")


def parse_labels(text: str | None) -> tuple[Requirement, ...]:
    """Parse a ``labelSelector``; an empty or absent selector matches everything."""
    if not text or not text.strip():
        return ()
    return tuple(_parse_label_term(term) for term in _split_terms(text))


def parse_fields(text: str | None, supported: frozenset[str], kind: str) -> tuple[Requirement, ...]:
    """Parse a ``fieldSelector``; labels outside ``supported`` are a 400 as on a real server."""
    if not text or not text.strip():
        return ()
    requirements: list[Requirement] = []
    for term in text.split(","):
        match = _FIELD.match(term)
        if match is None:
            raise _status.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        if match["key"] not in supported | {"metadata.name", "metadata.namespace"}:
            raise _status.bad_request(f'field label "{match["key"]}" not supported for {kind}')
        op = "!=" if match["op"] == "!=" else "="
        requirements.append(Requirement(match["key"], op, (match["value"],)))
    return tuple(requirements)


def field_value(obj: Mapping[str, Any], dotted: str) -> str:
    """The value a field selector compares: missing fields read as the empty string."""
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matches(
    obj: Mapping[str, Any],
    labels: Sequence[Requirement],
    fields: Sequence[Requirement] = (),
) -> bool:
    """Whether an object passes both selectors."""
    object_labels: Mapping[str, str] = obj.get("metadata", {}).get("labels") or {}
    if not all(requirement.matches(object_labels) for requirement in labels):
        return False
    values = {requirement.key: field_value(obj, requirement.key) for requirement in fields}
    return all(requirement.matches(values) for requirement in fields)
