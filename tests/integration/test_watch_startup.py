"""A namespace's cache is trusted as soon as both of its watches can be: listed, or resumed safely.

Launches ask whether the cache is fresh to pick their first check's interval: while it is
not, each workflow comes back for a check 2 s later. The watcher takes a namespace at a tick
and its watches connect a moment later; waiting for the next tick to say so cost about a
second of launches their extra check (measured: ~300 of 1,000 Jobs created at ~180/s).
The watcher and its watches run for real here, against the API emulator and a real Redis.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scheduler.records import RecordStore
from scheduler.settings import Settings
from tests.kube_emulator import KubeEmulator
from tests.services import wait_for
from workers import cache
from workers.backends.kubernetes import KubernetesBackend
from workers.watcher import LEASE_PREFIX, ResourceWatch, Waker, Watcher

NS = "default"
HOLDER = "holder-a"


@pytest.fixture
def backend(
    redis_url: str, kube_emulator: KubeEmulator, kube_emulator_kubeconfig: Path
) -> Iterator[KubernetesBackend]:
    settings = Settings(redis_url=redis_url, backend="kubernetes")
    environ = {**os.environ, "KUBECONFIG": str(kube_emulator_kubeconfig)}
    backend = KubernetesBackend.from_settings(settings, environ)
    yield backend
    backend.close()


def leased(redis_client: redis.Redis) -> str:
    """Hold the namespace's lease, as the watcher does before it starts a watch."""
    redis_client.set(LEASE_PREFIX + NS, HOLDER, px=60_000)
    return HOLDER


def waker(redis_client: redis.Redis) -> Waker:
    records = RecordStore(redis_client, 60, "jobferry")
    return Waker(None, redis_client, records)  # type: ignore[arg-type]  # no wake-ups here


def test_a_watch_says_once_that_it_connected(
    backend: KubernetesBackend, redis_client: redis.Redis
) -> None:
    calls: list[str] = []
    watch = ResourceWatch(
        backend,
        redis_client,
        NS,
        "pods",
        "app=x",
        waker(redis_client),
        holder=leased(redis_client),
        on_connected=lambda: calls.append("connected"),
    )
    watch.start()
    try:
        wait_for("the watch to connect", lambda: calls, timeout=10)
        assert watch.connected
    finally:
        watch.stop()
        watch.join(timeout=10)
    # Once per connection, not once per watch request it resumes with.
    assert calls == ["connected"]


def test_the_heartbeat_says_fresh_when_the_watches_connect_not_a_tick_later(
    redis_url: str, backend: KubernetesBackend, redis_client: redis.Redis
) -> None:
    settings = Settings(redis_url=redis_url, backend="kubernetes", watch_namespaces=[NS])
    watcher = Watcher(settings, redis_client, backend, waker(redis_client))
    # Without the watches' word, the cache would be trusted only at the next tick, 60 s on.
    watcher.TICK_SECONDS = 60.0
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for("the lease", lambda: cache.read_health(redis_client, NS).holder, timeout=10)
        wait_for("a fresh heartbeat", lambda: cache.read_health(redis_client, NS).ok(15), 10)
        assert all(watch.connected for watch in watcher.held[NS].watches)
    finally:
        watcher.stop()
        # stop() wakes the loop too: it does not sleep out its tick.
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not cache.read_health(redis_client, NS).fresh


def resumed_watch(
    backend: KubernetesBackend, redis_client: redis.Redis, resource_version: str
) -> ResourceWatch:
    """A pods watch that resumes from `resource_version`, as after a restart or a takeover."""
    redis_client.hset(cache.health_key(NS), "pods_rv", resource_version)
    return ResourceWatch(
        backend, redis_client, NS, "pods", "app=x", waker(redis_client), leased(redis_client)
    )


def test_a_watch_resumed_from_a_forgotten_version_is_trusted_only_after_it_listed_again(
    backend: KubernetesBackend, redis_client: redis.Redis, kube_emulator: KubeEmulator
) -> None:
    # Until the 410 comes the cache may miss anything that happened since the stored version,
    # so a check must not trust it. The server takes a moment to answer, as a busy one does.
    kube_emulator.add_namespace("moves-the-version-on")
    kube_emulator.compact()
    kube_emulator.delay_next("GET", r"/pods", 0.5)
    watch = resumed_watch(backend, redis_client, "1")
    watch.start()
    try:
        wait_for("the watch to be trusted", lambda: watch.connected, timeout=10, interval=0.001)
        health = cache.read_health(redis_client, NS)
    finally:
        watch.stop()
        watch.join(timeout=10)
    assert health.relists == 1
    assert "410 Gone" in health.last_error


def test_a_watch_resumed_from_a_kept_version_is_trusted_without_any_event(
    backend: KubernetesBackend, redis_client: redis.Redis
) -> None:
    # A standby taking over an idle namespace: no event may come for a long while.
    version = backend.list_objects("pods", NS, "app=x")["metadata"]["resourceVersion"]
    watch = resumed_watch(backend, redis_client, version)
    watch.start()
    try:
        wait_for("the watch to be trusted", lambda: watch.connected, timeout=10)
        health = cache.read_health(redis_client, NS)
    finally:
        watch.stop()
        watch.join(timeout=10)
    assert health.relists == 0
    assert health.pods_rv == version
