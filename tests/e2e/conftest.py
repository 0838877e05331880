"""The end-to-end pipeline: real Redis, real workers, a real API server and controllers.

Workers authenticate with a ServiceAccount token bound to the Role shipped in k8s/rbac.yaml,
so every test here also proves that Role is enough.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import Pipeline, make_pipeline
from tests.k8senv.cluster import Cluster
from tests.services import ROOT, RedisServer, wait_for
from workers.cache import Health, read_health

NAMESPACE = "jobferry-e2e"
STRICT_NAMESPACE = "jobferry-e2e-strict"
WORKER_NAMESPACE = "jobferry"
WORKER_ACCOUNT = "jobferry-worker"


@dataclass
class E2E:
    cluster: Cluster
    batch: client.BatchV1Api
    core: client.CoreV1Api
    worker_kubeconfig: Path


def rbac_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((ROOT / "k8s" / "rbac.yaml").read_text()) if doc]


def apply(api: client.ApiClient, doc: dict[str, Any]) -> None:
    from kubernetes import utils

    try:
        utils.create_from_dict(api, doc)
    # Already there from an earlier session on the same cluster.
    except utils.FailToCreateError as exc:
        if any(e.status != 409 for e in exc.api_exceptions):
            raise


def apply_admission(api: client.ApiClient, doc: dict[str, Any]) -> None:
    """kubernetes.utils has no ValidatingAdmissionPolicy support: create it through the API."""
    admission = client.AdmissionregistrationV1Api(api)
    create = {
        "ValidatingAdmissionPolicy": admission.create_validating_admission_policy,
        "ValidatingAdmissionPolicyBinding": admission.create_validating_admission_policy_binding,
    }[doc["kind"]]
    try:
        create(doc)
    # Already there from an earlier session on the same cluster.
    except ApiException as exc:
        if exc.status != 409:
            raise


def grant(
    api: client.ApiClient,
    namespace: str,
    rules_from: dict[str, Any],
    account: str,
    role_name: str,
    drop: tuple[str, str] | None = None,
) -> None:
    """Bind `account` to a copy of the shipped Role in `namespace`, minus one (resource, verb)."""
    role = copy.deepcopy(rules_from)
    role["metadata"].update(name=role_name, namespace=namespace)
    if drop is not None:
        for rule in role["rules"]:
            if drop[0] in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v != drop[1]]
    apply(api, role)
    apply(
        api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role_name, "namespace": namespace},
            "subjects": [
                {"kind": "ServiceAccount", "name": account, "namespace": WORKER_NAMESPACE}
            ],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role_name},
        },
    )


@pytest.fixture(scope="session")
def e2e(k8s_control_plane: Cluster) -> Iterator[E2E]:
    api = k8s_control_plane.admin_api_client()
    for name in (NAMESPACE, WORKER_NAMESPACE):
        apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    strict = {"name": STRICT_NAMESPACE, "labels": {"jobferry.test/policy": "strict"}}
    apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": strict})
    policy = Path(__file__).parent / "manifests" / "require-memory-limits.yaml"
    for doc in yaml.safe_load_all(policy.read_text()):
        apply_admission(api, doc)
    docs = {doc["kind"]: doc for doc in rbac_documents()}
    apply(api, docs["ServiceAccount"])
    # The shipped Role and RoleBinding, moved to the namespaces the tests run Jobs in.
    for namespace in (NAMESPACE, STRICT_NAMESPACE):
        for kind in ("Role", "RoleBinding"):
            doc = copy.deepcopy(docs[kind])
            doc["metadata"]["namespace"] = namespace
            apply(api, doc)
    kubeconfig = k8s_control_plane.sa_kubeconfig(WORKER_NAMESPACE, WORKER_ACCOUNT, create=False)
    yield E2E(k8s_control_plane, client.BatchV1Api(api), client.CoreV1Api(api), kubeconfig)
    api.close()


@pytest.fixture(scope="module")
def k8s_pipeline(
    redis_srv: RedisServer, e2e: E2E, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """Workers for a whole module (workflow ids differ per test), on Redis database 2."""
    url = redis_srv.url.rsplit("/", 1)[0] + "/2"
    admin = redis_srv.client()
    admin.flushall()
    admin.close()
    pipeline = make_pipeline(
        url,
        tmp_path_factory.mktemp("e2e-logs"),
        {"JOBFERRY_BACKEND": "kubernetes", "JOBFERRY_STARTUP_GRACE_SECONDS": "3"},
    )
    pipeline.env["KUBECONFIG"] = str(e2e.worker_kubeconfig)
    pipeline.start_worker(concurrency=4)
    # The watcher runs as the workers' ServiceAccount too, so the audit of the Role covers it.
    pipeline.start_watcher(JOBFERRY_WATCH_NAMESPACES=f"{NAMESPACE},{STRICT_NAMESPACE}")
    wait_for("the watcher's heartbeat", lambda: watch_health(pipeline, NAMESPACE), timeout=60)
    yield pipeline
    pipeline.stop()


def watch_health(pipeline: Pipeline, namespace: str) -> Health | None:
    """The namespace's watch health when the cache can be trusted, else None."""
    client_ = redis.Redis.from_url(pipeline.client.settings.redis_url)
    try:
        health = read_health(client_, namespace)
    finally:
        client_.close()
    return health if health.ok(pipeline.client.settings.watch_stale_seconds) else None
