"""What a test gets: a reachable cluster with an admin identity, however it was obtained.

`Cluster` works against any cluster given an admin kubeconfig (one started by
`ControlPlane`, by `python -m tests.k8senv up`, or elsewhere); `ControlPlane` subclasses it
and additionally owns the processes.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ApiError
from .kubeconfig import ca_pem_of, load_credentials, server_of, token_user, write_kubeconfig
from .logs import apply_logs, logs_object, write_cri_log
from .rest import RestClient

if TYPE_CHECKING:
    import kubernetes.client


class Cluster:
    """An API server reachable through an admin kubeconfig.

    Attributes:
        kubeconfig: admin kubeconfig (system:masters); pass it to code under test.
        work_dir: where derived files (ServiceAccount kubeconfigs, pod logs) are written.
    """

    def __init__(self, kubeconfig: Path, work_dir: Path | None = None) -> None:
        self.kubeconfig = kubeconfig
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="jobferry-k8senv-attach-"))
        self._rest: RestClient | None = None

    @property
    def server(self) -> str:
        """The API server URL, e.g. https://127.0.0.1:40123."""
        return server_of(self.kubeconfig)

    def rest(self) -> RestClient:
        """A stdlib JSON client with the admin identity (for harness-level calls)."""
        if self._rest is None:
            self._rest = RestClient(
                load_credentials(self.kubeconfig, self.work_dir / "admin-credentials")
            )
        return self._rest

    def admin_api_client(self) -> kubernetes.client.ApiClient:
        """A `kubernetes.client.ApiClient` with the admin identity (close it when done)."""
        import kubernetes.config

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def sa_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 3600, create: bool = True
    ) -> Path:
        """A kubeconfig authenticating as ServiceAccount `namespace/name` (TokenRequest API).

        The account starts with no RBAC permissions beyond discovery; grant them with Roles.

        Parameters:
            create: create the ServiceAccount first if it does not exist.
        """
        client = self.rest()
        if create:
            _create_if_missing(
                client,
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            )
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        response = client.post(
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request
        )
        path = self.work_dir / "kubeconfigs" / f"sa-{namespace}-{name}.kubeconfig"
        return write_kubeconfig(
            path,
            server=self.server,
            ca_pem=ca_pem_of(self.kubeconfig),
            user=token_user(response["status"]["token"]),
            name=f"{namespace}-{name}",
        )

    def set_pod_logs(
        self, namespace: str, pod: str, text: str, *, container: str | None = None
    ) -> Path:
        """Make `pods/log` of `namespace/pod` (one container, or all) return `text`.

        Needs kwok from this harness (its `Logs` CRD). Returns the CRI log file written.
        """
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{namespace}_{pod}_{container or 'all'}")
        log_file = write_cri_log(self.work_dir / "pod-logs" / "set" / f"{safe}.log", text)
        apply_logs(self.rest(), logs_object(namespace, pod, log_file, container=container))
        return log_file

    @property
    def audit_log(self) -> Path | None:
        """The API server's audit log of ServiceAccount requests; None when attached."""
        return None

    def close(self) -> None:
        """Remove files this object made when it made its own work dir."""
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def _create_if_missing(client: RestClient, collection: str, obj: dict[str, Any]) -> None:
    try:
        client.post(collection, obj)
    # Already exists: fine, that is what we wanted.
    except ApiError as e:
        if e.status != 409:
            raise
