"""The cluster side of a run: the control plane, the benchmark's namespaces and identities.

jobferry's worker authenticates as the ServiceAccount of k8s/rbac.yaml with the shipped Role,
as in production and in tests/e2e; the baseline as a ServiceAccount of its own, so the audit
log tells their requests apart from each other and from the controllers'.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

from tests.k8senv.cluster import Cluster
from tests.k8senv.errors import ApiError
from tests.k8senv.rest import RestClient
from tests.services import ROOT

from .apimetrics import Scrape, parse_metrics

WORKER_NAMESPACE = "jobferry"
WORKER_ACCOUNT = "jobferry-worker"
BASELINE_ACCOUNT = "bench-baseline"
JOBFERRY_NAMESPACE = "bench-jobferry"
BASELINE_NAMESPACE = "bench-baseline"
WARMUP_NAMESPACE = "bench-warmup"
TOKEN_SECONDS = 48 * 3600


def user_of(account: str) -> str:
    return f"system:serviceaccount:{WORKER_NAMESPACE}:{account}"


def scrape(cluster: Cluster) -> Scrape:
    """kube-apiserver's own `/metrics` (needs the admin credential)."""
    return parse_metrics(cluster.rest().get_text("/metrics"))


def prepare(cluster: Cluster) -> tuple[Path, Path]:
    """Namespaces, ServiceAccounts and Roles; returns the (worker, baseline) kubeconfigs."""
    rest = cluster.rest()
    for name in (WORKER_NAMESPACE, JOBFERRY_NAMESPACE, BASELINE_NAMESPACE, WARMUP_NAMESPACE):
        _create(
            rest,
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "k8s" / "rbac.yaml").read_text()) if d}
    _create(rest, f"/api/v1/namespaces/{WORKER_NAMESPACE}/serviceaccounts", docs["ServiceAccount"])
    _bind(rest, JOBFERRY_NAMESPACE, docs["Role"], docs["RoleBinding"])
    baseline_role = copy.deepcopy(docs["Role"])
    baseline_role["metadata"]["name"] = BASELINE_ACCOUNT
    baseline_role["rules"] = [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]}
    ]
    baseline_binding = copy.deepcopy(docs["RoleBinding"])
    baseline_binding["metadata"]["name"] = BASELINE_ACCOUNT
    baseline_binding["subjects"][0]["name"] = BASELINE_ACCOUNT
    baseline_binding["roleRef"]["name"] = BASELINE_ACCOUNT
    _bind(rest, BASELINE_NAMESPACE, baseline_role, baseline_binding)
    worker = cluster.sa_kubeconfig(
        WORKER_NAMESPACE, WORKER_ACCOUNT, create=False, expiration_seconds=TOKEN_SECONDS
    )
    baseline = cluster.sa_kubeconfig(
        WORKER_NAMESPACE, BASELINE_ACCOUNT, expiration_seconds=TOKEN_SECONDS
    )
    return worker, baseline


def warm_up(cluster: Cluster, jobs: list[dict[str, Any]], timeout: float = 120.0) -> float:
    """Create `jobs` (manifests of the warm-up namespace) as the admin and wait until each has
    succeeded; returns the seconds it took.

    A control plane just started is slower per request than one that has served a few: the
    first Jobs pay for the API server's, the Job controller's, the scheduler's and kwok's
    first use of their code paths. Both phases of a run get a fresh control plane warmed by
    the same Jobs, so that neither pays for that and the order of the phases does not matter.
    """
    rest = cluster.rest()
    began = time.monotonic()
    collection = f"/apis/batch/v1/namespaces/{WARMUP_NAMESPACE}/jobs"
    for job in jobs:
        rest.post(collection, job)
    names = {job["metadata"]["name"] for job in jobs}
    while True:
        items = rest.get(collection).get("items") or []
        done = sum(
            1
            for item in items
            if item["metadata"]["name"] in names and (item.get("status") or {}).get("succeeded")
        )
        if done == len(jobs):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise TimeoutError(f"warm-up: {done} of {len(jobs)} Jobs succeeded in {timeout:.0f} s")
        time.sleep(0.2)


def _bind(rest: RestClient, namespace: str, role: dict[str, Any], binding: dict[str, Any]) -> None:
    base = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    for kind, doc in (("roles", role), ("rolebindings", binding)):
        doc = copy.deepcopy(doc)
        doc["metadata"]["namespace"] = namespace
        _create(rest, f"{base}/{kind}", doc)


def _create(rest: RestClient, collection: str, obj: dict[str, Any]) -> None:
    try:
        rest.post(collection, obj)
    # Already there (an existing cluster used before): that is what we want.
    except ApiError as exc:
        if exc.status != 409:
            raise
