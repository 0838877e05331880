"""Kubernetes naming and quantity rules, checked on the producer side.

The API server would reject these values anyway, but only after the request was queued and a
worker tried to create the Job. Checking them here turns a late `rejected` outcome into an
immediate error that names the field and the rule. The rules are the API server's own
(apimachinery `validation.go` and `resource/quantity.go`).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_VAR_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[a-zA-Z]*|[eE][-+]?[0-9]+)$"
)

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def check_dns1123_label(value: str, what: str) -> str:
    """A lowercase RFC 1123 label: namespaces, container and Job names."""
    if len(value) > DNS1123_LABEL_MAX:
        raise ValueError(f"{what} {value!r} is {len(value)} characters; at most 63 are allowed")
    if not _DNS1123_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must consist of lowercase letters, digits and '-', "
            "and start and end with a letter or digit (RFC 1123 label), e.g. 'batch-jobs'"
        )
    return value


def check_dns1123_subdomain(value: str, what: str) -> str:
    """A lowercase RFC 1123 subdomain: most object names (ServiceAccounts, Secrets...)."""
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        raise ValueError(f"{what} {value!r} is {len(value)} characters; at most 253 are allowed")
    if not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f"{what} {value!r} must consist of lowercase letters, digits, '-' and '.', "
            "and start and end with a letter or digit (RFC 1123 subdomain)"
        )
    return value


def check_label_value(value: str, what: str) -> str:
    """A label value: empty, or up to 63 of [A-Za-z0-9-_.] starting and ending alphanumeric."""
    if value == "":
        return value
    if len(value) > LABEL_VALUE_MAX:
        raise ValueError(f"{what} {value!r} is {len(value)} characters; at most 63 are allowed")
    if not _QUALIFIED_NAME.match(value):
        raise ValueError(
            f"{what} {value!r} may contain only letters, digits, '-', '_' and '.', "
            "and must start and end with a letter or digit"
        )
    return value


def check_qualified_name(key: str, what: str) -> str:
    """A label or annotation key: an optional DNS subdomain prefix, '/', and a name."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        raise ValueError(f"{what} {key!r} has an empty prefix before '/'")
    if prefix:
        check_dns1123_subdomain(prefix, f"the prefix of {what} {key!r}")
    if not name:
        raise ValueError(f"{what} {key!r} has an empty name; use e.g. 'team' or 'acme.io/team'")
    if len(name) > LABEL_VALUE_MAX:
        raise ValueError(f"the name part of {what} {key!r} is longer than 63 characters")
    if not _QUALIFIED_NAME.match(name):
        raise ValueError(
            f"{what} {key!r} may contain only letters, digits, '-', '_' and '.' "
            "(after an optional 'prefix/'), and must start and end with a letter or digit"
        )
    return key


def check_config_key(key: str, what: str) -> str:
    """A key in a Secret or ConfigMap."""
    if not key or len(key) > DNS1123_SUBDOMAIN_MAX or not _CONFIG_KEY.match(key):
        raise ValueError(
            f"{what} {key!r} must be 1-253 letters, digits, '-', '_' or '.' "
            "(a Secret or ConfigMap key)"
        )
    return key


def check_env_var_name(name: str) -> str:
    if not _ENV_VAR_NAME.match(name):
        raise ValueError(
            f"environment variable name {name!r} must consist of letters, digits, "
            "'_', '-' and '.', and must not start with a digit"
        )
    return name


def parse_quantity(text: str, what: str) -> Decimal:
    """Parse a Kubernetes resource quantity ('500m', '1.5', '1Gi', '2e3') into a Decimal.

    Raises:
        ValueError: with the accepted forms, when `text` is not a quantity or is negative.
    """
    match = _QUANTITY.match(text.strip()) if text == text.strip() else None
    if match is None:
        raise ValueError(
            f"{what} {text!r} is not a Kubernetes quantity; use forms like "
            "'500m' or '2' for CPU and '256Mi' or '1Gi' for memory"
        )
    number, suffix = match.group("number"), match.group("suffix")
    try:
        base = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"{what} {text!r} has no valid number") from exc
    if suffix in _BINARY_SUFFIXES:
        return base * _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return base * _DECIMAL_SUFFIXES[suffix]
    if suffix[:1] in ("e", "E"):
        return base * Decimal(10) ** int(suffix[1:])
    raise ValueError(
        f"{what} {text!r} has an unknown suffix {suffix!r}; use one of "
        "m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei"
    )
