"""`kubectl apply --dry-run=server -k k8s/` against the real API server.

A server-side dry run runs every object through the API server's validation and admission
(schemas, Pod Security `restricted` on the namespace's pod templates, RBAC escalation checks
on the Role) without persisting anything.
"""

from __future__ import annotations

import copy
import re
import subprocess
from typing import Any

import yaml

from tests.deploy.test_k8s_manifests import kubectl, render
from tests.k8senv.cluster import Cluster
from tests.services import ROOT

DRY_RUN_LINE = re.compile(r"^(\S+) (created|configured|unchanged) \(server dry run\)$")


def run_kubectl(
    cluster: Cluster, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def resource_name(doc: dict[str, Any]) -> str:
    """How kubectl names an object in its output: `deployment.apps/jobferry-beat`."""
    group = doc["apiVersion"].rpartition("/")[0]
    kind = doc["kind"].lower() + (f".{group}" if group else "")
    return f"{kind}/{doc['metadata']['name']}"


def ensure_namespace(cluster: Cluster) -> None:
    """Apply k8s/namespace.yaml for real, as `kubectl apply -k` does first.

    A dry run persists nothing, so on a fresh cluster the base's namespaced objects would be
    refused for a namespace that "does not exist"; a real apply creates the Namespace before
    the rest. The Pod Security labels must be live for the server to judge the pod templates.
    """
    result = run_kubectl(cluster, "apply", "-f", str(ROOT / "k8s" / "namespace.yaml"))
    assert result.returncode == 0, result.stderr


def test_the_kustomize_base_passes_a_server_side_dry_run(k8s_control_plane: Cluster) -> None:
    ensure_namespace(k8s_control_plane)
    result = run_kubectl(k8s_control_plane, "apply", "--dry-run=server", "-k", str(ROOT / "k8s"))
    assert result.returncode == 0, result.stdout + result.stderr
    # Pod Security `restricted` (warn) and deprecations would show up here. Objects other e2e
    # tests created imperatively (the RBAC of k8s/rbac.yaml) draw kubectl's note that their
    # last-applied annotation will be added; that one says nothing about the manifests.
    warnings = [
        line
        for line in result.stderr.splitlines()
        if "Warning" in line and "last-applied-configuration annotation" not in line
    ]
    assert warnings == [], result.stderr
    reported = set()
    for line in result.stdout.splitlines():
        match = DRY_RUN_LINE.match(line)
        assert match, f"unexpected kubectl output: {line!r}"
        reported.add(match.group(1))
    assert reported == {resource_name(doc) for doc in render()}


def test_the_server_judges_pod_templates_by_the_restricted_standard(
    k8s_control_plane: Cluster,
) -> None:
    """The check above can fail: a worker that may run as root draws the server's warning."""
    ensure_namespace(k8s_control_plane)
    worker = next(doc for doc in render() if doc["metadata"]["name"] == "jobferry-worker-launch")
    loose = copy.deepcopy(worker)
    loose["metadata"]["name"] = "jobferry-worker-loose"
    del loose["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    result = run_kubectl(
        k8s_control_plane, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(loose)
    )
    assert result.returncode == 0, result.stderr
    assert 'would violate PodSecurity "restricted:latest"' in result.stderr
    assert "runAsNonRoot" in result.stderr
