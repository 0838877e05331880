"""403s: a worker without a grant is rejected; an API server still loading RBAC is retried.

The messages are kube-apiserver v1.37.2's own: the second was answered to a status check by
an API server restarting under tests/e2e/test_faults.py, before its RBAC caches were loaded.
"""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from workers.backends.base import Forbidden, TemporaryError
from workers.backends.kubernetes import translate_api_error

USER = "system:serviceaccount:jobferry:jobferry-worker"
NOT_GRANTED = (
    f'jobs.batch is forbidden: User "{USER}" cannot create resource "jobs" in API group "batch" '
    'in the namespace "jobferry-e2e"'
)
WARMING_UP = (
    f'jobs.batch "jobferry-fault-api-a-04-e478e2c4" is forbidden: User "{USER}" cannot get '
    'resource "jobs" in API group "batch" in the namespace "jobferry-e2e": rbac: RBAC: '
    '[clusterrole.rbac.authorization.k8s.io "system:service-account-issuer-discovery" not found, '
    'clusterrole.rbac.authorization.k8s.io "system:cluster-trust-bundle-discovery" not found, '
    'clusterrole.rbac.authorization.k8s.io "system:basic-user" not found, '
    'clusterrole.rbac.authorization.k8s.io "system:public-info-viewer" not found, '
    'clusterrole.rbac.authorization.k8s.io "system:discovery" not found]'
)


def forbidden(message: str) -> ApiException:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps(
        {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
         "message": message}
    )  # fmt: skip
    return exc


def test_a_missing_grant_is_permanent() -> None:
    error = translate_api_error(forbidden(NOT_GRANTED), "create", "jobs", "jobferry-e2e")
    assert isinstance(error, Forbidden)
    assert error.reason == "Forbidden"


def test_a_restarting_api_server_without_its_rbac_caches_is_temporary() -> None:
    error = translate_api_error(forbidden(WARMING_UP), "get", "jobs", "jobferry-e2e")
    assert isinstance(error, TemporaryError)
    assert error.reason == "AuthorizerNotReady"
    assert "RBAC caches were still loading" in error.message
