"""Counting API requests: kube-apiserver's own `/metrics`, and its audit log per client.

Two independent counts, because they answer different questions:

* `apiserver_request_total` (from `/metrics`) counts every request the API server answered,
  from every client: jobferry, but also the Job controller, the scheduler, kwok (the kubelet)
  and the garbage collector, which work on every Job whoever created it. It has no user
  label, so it gives the *cluster-wide* cost of a workflow.
* The audit log (tests/k8senv audits every request made by a ServiceAccount, at Metadata
  level) names the user of each request, so it gives the requests *one client* made: the
  jobferry worker's ServiceAccount, or the baseline's.

`apiserver_flowcontrol_dispatched_requests_total{flow_schema="service-accounts"}` (also from
`/metrics`) counts requests that API Priority and Fairness classified as made by a
ServiceAccount; every control-plane component here uses the admin certificate (flow schema
`exempt`), so in a phase where only one ServiceAccount client runs it is a second,
metrics-only count of that client's requests.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REQUEST_TOTAL = "apiserver_request_total"
APF_DISPATCHED = "apiserver_flowcontrol_dispatched_requests_total"
SERVICE_ACCOUNT_FLOW_SCHEMA = "service-accounts"


@dataclass(frozen=True)
class Scrape:
    """The counters of one `/metrics` scrape that the benchmark compares."""

    requests: Mapping[str, float]
    """apiserver_request_total of resource requests, keyed 'VERB resource[/subresource]'."""
    service_account_requests: float
    """APF dispatched requests of flow schema 'service-accounts' (ServiceAccount clients)."""


def parse_metrics(text: str) -> Scrape:
    """Read the counters we need from the Prometheus text of kube-apiserver's `/metrics`.

    Non-resource requests (`/metrics`, `/readyz`, discovery of `/api`) are left out: the
    benchmark's own scrapes would otherwise count.
    """
    requests: dict[str, float] = {}
    service_accounts = 0.0
    for family in text_string_to_metric_families(text):
        # The parser drops the `_total` suffix from the family name, not from the samples.
        if family.name not in (
            REQUEST_TOTAL.removesuffix("_total"),
            APF_DISPATCHED.removesuffix("_total"),
        ):
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name == REQUEST_TOTAL and labels.get("resource"):
                key = request_key(labels)
                requests[key] = requests.get(key, 0.0) + sample.value
            elif (
                sample.name == APF_DISPATCHED
                and labels.get("flow_schema") == SERVICE_ACCOUNT_FLOW_SCHEMA
            ):
                service_accounts += sample.value
    return Scrape(requests, service_accounts)


def request_key(labels: Mapping[str, str]) -> str:
    """'VERB resource[/subresource]', e.g. 'GET jobs' or 'GET pods/log'."""
    resource = labels.get("resource", "")
    if labels.get("subresource"):
        resource += "/" + labels["subresource"]
    return f"{labels.get('verb', '?')} {resource}"


def delta(before: Scrape, after: Scrape) -> Scrape:
    """What happened between two scrapes (counters only grow while the server runs)."""
    keys = set(before.requests) | set(after.requests)
    changed = {
        key: after.requests.get(key, 0.0) - before.requests.get(key, 0.0) for key in sorted(keys)
    }
    return Scrape(
        {key: value for key, value in changed.items() if value},
        after.service_account_requests - before.service_account_requests,
    )


def total(scrape: Scrape) -> float:
    return float(sum(scrape.requests.values()))


@dataclass(frozen=True)
class AuditCount:
    """Requests of one user in a stretch of the audit log."""

    total: int
    by_request: Mapping[str, int]
    """Keyed 'VERB resource[/subresource]' with the audit verb (get, list, create, watch...)."""


def audit_offset(path: Path) -> int:
    """Where the audit log ends now: count from here after a phase."""
    return path.stat().st_size if path.exists() else 0


def count_audit(lines: Iterable[str], user: str) -> AuditCount:
    """Count the audit events of `user` (one event per request: stage ResponseComplete)."""
    by_request: Counter[str] = Counter()
    for line in lines:
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("user", {}).get("username") != user:
            continue
        if event.get("stage") not in (None, "ResponseComplete", "Panic"):
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", event.get("requestURI", "?"))
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        by_request[f"{event.get('verb', '?')} {resource}"] += 1
    return AuditCount(sum(by_request.values()), dict(sorted(by_request.items())))


def read_audit(path: Path, offset: int, user: str) -> AuditCount | None:
    """Count `user`'s requests in the audit log written since `offset`.

    None when the log was rotated meanwhile (it is shorter than `offset`): the count is lost.
    """
    if path.stat().st_size < offset:
        return None
    with path.open("r", encoding="utf-8", errors="replace") as log:
        log.seek(offset)
        return count_audit(log, user)
