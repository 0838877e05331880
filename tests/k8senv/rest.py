"""A minimal stdlib HTTPS client for the Kubernetes API.

Why not the `kubernetes` package: the harness must start (and the log binder must run)
before anything else is installed, and a control plane's own bootstrapping needs only a
handful of calls (create a Node, wait for a ServiceAccount, a TokenRequest, a watch).
Tests themselves use the real `kubernetes` client through `Cluster.admin_api_client()`.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ApiError

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are to it."""

    server: str
    """Base URL, e.g. https://127.0.0.1:6443 (no trailing slash)."""
    ca_file: Path | None = None
    """PEM bundle that signed the server certificate; None means the system store."""
    insecure: bool = False
    """Skip server certificate verification (only for loopback health checks)."""
    cert_file: Path | None = None
    """Client certificate (PEM) for X.509 authentication."""
    key_file: Path | None = None
    """Private key of cert_file."""
    token: str | None = None
    """Bearer token (ServiceAccount tokens, static tokens)."""

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context that verifies the server (unless insecure) and presents our cert."""
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            cafile = str(self.ca_file) if self.ca_file else None
            context = ssl.create_default_context(cafile=cafile)
        if self.cert_file and self.key_file:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class RestClient:
    """JSON requests against one API server with one identity."""

    def __init__(self, credentials: Credentials, *, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self._context = credentials.ssl_context()

    def get(self, path: str, query: Mapping[str, str] | None = None) -> JsonObject:
        return self.request("GET", path, query=query)

    def post(self, path: str, body: JsonObject) -> JsonObject:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: JsonObject) -> JsonObject:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, path: str) -> JsonObject:
        return self.request("DELETE", path)

    def get_text(self, path: str, query: Mapping[str, str] | None = None) -> str:
        """GET a non-JSON endpoint such as /readyz or pods/log."""
        with self._open("GET", path, query=query) as response:
            data: bytes = response.read()
        return data.decode()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: JsonObject | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        data = json.dumps(body).encode() if body is not None else None
        with self._open(
            method, path, data=data, query=query, content_type=content_type
        ) as response:
            raw: bytes = response.read()
        if not raw:
            return {}
        decoded: JsonObject = json.loads(raw)
        return decoded

    def watch(self, path: str, query: Mapping[str, str]) -> Iterator[JsonObject]:
        """Yield watch events ({"type": ..., "object": ...}) until the server ends the stream."""
        params = {**query, "watch": "1"}
        with self._open("GET", path, query=params, timeout=None) as response:
            for line in response:
                if line.strip():
                    event: JsonObject = json.loads(line)
                    yield event

    def _open(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = -1.0,
    ) -> Any:
        url = self.credentials.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json, */*"}
        if data is not None:
            headers["Content-Type"] = content_type
        if self.credentials.token:
            headers["Authorization"] = f"Bearer {self.credentials.token}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        effective_timeout = self.timeout if timeout == -1.0 else timeout
        try:
            return urllib.request.urlopen(request, context=self._context, timeout=effective_timeout)
        # The API server's error body is a Status object: surface its reason and message.
        except urllib.error.HTTPError as e:
            raise _api_error(e, method, path) from e


def _api_error(error: urllib.error.HTTPError, method: str, path: str) -> ApiError:
    raw = error.read().decode(errors="replace")
    try:
        status = json.loads(raw)
        reason, message = str(status.get("reason", "")), str(status.get("message", raw))
    # Not every error body is a Status (kwok, proxies, plain-text handlers).
    except (ValueError, AttributeError):
        reason, message = error.reason if isinstance(error.reason, str) else "", raw
    return ApiError(error.code, reason, message.strip(), method=method, path=path)
