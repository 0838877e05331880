"""Bad requests and bad settings: each fails with a message that names the problem and the fix.

The request cases run against a real Redis and check afterwards that nothing was written: a
bad request must fail before anything is queued.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from scheduler import Jobferry, Settings, WorkflowRequest
from scheduler.errors import BrokerUnavailableError, RequestError
from scheduler.settings import describe_request_error, load_settings

GOOD: dict[str, Any] = {
    "workflow_id": "report-2026-12-04",
    "image": "ghcr.io/acme/report:1.4.2",
    "command": ["python", "-m", "report"],
}

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("cpu not a quantity", {"cpu_request": "500x"}, "unknown suffix 'x'"),
    ("memory in GB", {"memory_limit": "1GB"}, "unknown suffix 'GB'"),
    ("negative memory", {"memory_request": "-1Gi"}, "is not a Kubernetes quantity"),
    ("quantity with spaces", {"cpu_limit": " 1"}, "is not a Kubernetes quantity"),
    (
        "cpu request above limit",
        {"cpu_request": "1", "cpu_limit": "500m"},
        "cpu_request '1' is above cpu_limit '500m'",
    ),
    (
        "memory request above limit",
        {"memory_request": "2Gi", "memory_limit": "1Gi"},
        "memory_request '2Gi' is above memory_limit '1Gi'",
    ),
    ("empty id", {"workflow_id": ""}, "workflow_id must not be empty"),
    ("id too long", {"workflow_id": "a" * 64}, "at most 63 are allowed"),
    ("id with a space", {"workflow_id": "bad id"}, "may contain only letters, digits"),
    ("id starting with a dash", {"workflow_id": "-x"}, "start and end with a letter or digit"),
    ("id with non-ASCII", {"workflow_id": "rapport-été"}, "may contain only letters, digits"),
    ("empty image", {"image": ""}, "must be a non-empty image reference"),
    ("image with a space", {"image": "acme/report 1.4"}, "without spaces"),
    ("no command", {"command": []}, "at least 1 item"),
    ("blank program", {"command": [" "]}, "command[0] must name the program"),
    ("namespace in capitals", {"namespace": "Batch"}, "lowercase letters, digits and '-'"),
    ("namespace too long", {"namespace": "n" * 64}, "at most 63 are allowed"),
    ("label key with '!'", {"labels": {"bad key!": "x"}}, "label key 'bad key!'"),
    ("label value with spaces", {"labels": {"team": "data science"}}, "label 'team' value"),
    ("reserved label", {"labels": {"app": "mine"}}, "are set by jobferry itself"),
    ("empty label prefix", {"labels": {"/team": "x"}}, "has an empty prefix"),
    (
        "annotation prefix in capitals",
        {"annotations": {"Acme.IO/owner": "x"}},
        "RFC 1123 subdomain",
    ),
    (
        "env name starting with a digit",
        {"env": [{"name": "1TOKEN", "value": "x"}]},
        "must not start with a digit",
    ),
    (
        "env with value and secret",
        {"env": [{"name": "TOKEN", "value": "x", "secret_key_ref": {"name": "s", "key": "k"}}]},
        "needs exactly one of",
    ),
    (
        "env given twice",
        {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        "given more than once",
    ),
    (
        "secret key with spaces",
        {"env": [{"name": "T", "secret_key_ref": {"name": "s", "key": "not a key!"}}]},
        "must be 1-253 letters, digits",
    ),
    (
        "toleration key with spaces",
        {"tolerations": [{"key": "gpu type", "operator": "Exists"}]},
        "toleration key 'gpu type'",
    ),
    ("negative backoff limit", {"backoff_limit": -1}, "greater than or equal to 0"),
    ("backoff limit as text", {"backoff_limit": "3"}, "Input should be a valid integer"),
    ("zero deadline", {"deadline_seconds": 0}, "greater than 0"),
    ("negative TTL", {"ttl_seconds_after_finished": -5}, "greater than or equal to 0"),
    ("service account in capitals", {"service_account": "Report_SA"}, "RFC 1123 subdomain"),
    ("pull secret in capitals", {"image_pull_secrets": ["Registry"]}, "image pull secret"),
    (
        "toleration Exists with value",
        {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]},
        "must not set a value",
    ),
    ("misspelt field", {"imagee": "x"}, "Extra inputs are not permitted"),
]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [(f, e) for _, f, e in BAD_REQUESTS],
    ids=[name for name, _, _ in BAD_REQUESTS],
)
def test_bad_request_is_refused_before_anything_is_queued(
    fields: dict[str, Any], expected: str, redis_client: redis.Redis, redis_url: str
) -> None:
    client = Jobferry(Settings(redis_url=redis_url))
    with pytest.raises(ValidationError) as info:
        client.submit(WorkflowRequest(**{**GOOD, **fields}))
    message = describe_request_error(info.value)
    assert expected in message
    assert redis_client.dbsize() == 0


BAD_SETTINGS: list[tuple[str, dict[str, str], str]] = [
    ("unknown backend", {"JOBFERRY_BACKEND": "docker"}, "JOBFERRY_BACKEND"),
    ("HTTP URL for Redis", {"JOBFERRY_REDIS_URL": "http://redis:6379"}, "is not a Redis URL"),
    ("app label with '_'", {"JOBFERRY_APP_LABEL": "Job_Ferry"}, "JOBFERRY_APP_LABEL"),
    (
        "interval cap below interval",
        {"JOBFERRY_STATUS_INTERVAL_SECONDS": "10", "JOBFERRY_STATUS_INTERVAL_MAX_SECONDS": "5"},
        "must be >= JOBFERRY_STATUS_INTERVAL_SECONDS",
    ),
    (
        "visibility timeout below 4 intervals",
        {"JOBFERRY_VISIBILITY_TIMEOUT_SECONDS": "100"},
        "at least 4x the longest status interval",
    ),
    ("negative log tail", {"JOBFERRY_LOG_TAIL_LINES": "-1"}, "JOBFERRY_LOG_TAIL_LINES"),
    ("typo in a setting", {"JOBFERRY_TIMEOUT_SECONDS": "3"}, "JOBFERRY_TIMEOUT_SECONDS"),
    (
        "timeout not a number",
        {"JOBFERRY_API_TIMEOUT_SECONDS": "soon"},
        "JOBFERRY_API_TIMEOUT_SECONDS",
    ),
]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("env", "expected"),
    [(e, x) for _, e, x in BAD_SETTINGS],
    ids=[name for name, _, _ in BAD_SETTINGS],
)
def test_bad_setting_names_the_variable(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RequestError) as info:
        load_settings()
    assert expected in str(info.value)


def test_unreachable_redis_is_a_clear_error_and_nothing_is_half_created() -> None:
    client = Jobferry(Settings(redis_url="redis://:hunter22@127.0.0.1:1/0"))
    with pytest.raises(BrokerUnavailableError) as info:
        client.submit(WorkflowRequest(**GOOD))
    message = str(info.value)
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in message
    assert "JOBFERRY_REDIS_URL" in message
    assert "hunter22" not in message


@pytest.mark.usefixtures("clean_env")
def test_missing_kubeconfig_lists_every_place_tried(tmp_path: Path) -> None:
    from workers.backends.kubernetes import load_client_configuration

    settings = Settings()
    with pytest.raises(RequestError) as info:
        load_client_configuration(settings, {"HOME": str(tmp_path)})
    message = str(info.value)
    assert "KUBERNETES_SERVICE_HOST is not set" in message
    assert f"{tmp_path}/.kube/config (no such file)" in message
    assert "JOBFERRY_BACKEND=local" in message


def test_explicit_kubeconfig_that_is_missing(tmp_path: Path) -> None:
    from workers.backends.kubernetes import load_client_configuration

    settings = Settings(kubeconfig=tmp_path / "nope.yaml")
    with pytest.raises(RequestError, match=re.escape("nope.yaml (no such file)")):
        load_client_configuration(settings, {"KUBECONFIG": "/elsewhere"})


def test_same_id_with_a_different_request_is_a_conflict(redis_url: str) -> None:
    from scheduler import WorkflowConflictError

    client = Jobferry(Settings(redis_url=redis_url))
    client.submit(WorkflowRequest(**GOOD))
    with pytest.raises(WorkflowConflictError, match="choose a new workflow_id"):
        client.submit(WorkflowRequest(**{**GOOD, "image": "ghcr.io/acme/report:1.4.3"}))
    handle = client.submit(WorkflowRequest(**GOOD))
    assert handle.workflow_id == GOOD["workflow_id"]
