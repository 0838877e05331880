"""The watcher writes the cache only while it holds the namespace's lease, atomically.

A watcher that stalled (a long GC pause, a frozen VM) may wake up after its lease expired and
another replica took the namespace over. Its next write must not land: the lease check and
the writes are one Lua script on a real redis-server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kubernetes import client

from scheduler.records import RecordStore
from scheduler.settings import Settings
from workers import cache
from workers.backends.kubernetes import KubernetesBackend
from workers.watcher import (
    LEASE_PREFIX,
    RV_WRITE_SECONDS,
    FencedWrites,
    NamespaceWatch,
    ResourceWatch,
    Waker,
    Watcher,
)

NS = "team-a"
LEASE = LEASE_PREFIX + NS


def job_event(name: str, rv: str) -> dict[str, Any]:
    return {
        "type": "ADDED",
        "object": {
            "metadata": {"name": name, "namespace": NS, "resourceVersion": rv, "labels": {}},
            "status": {"active": 1},
        },
    }


@pytest.fixture
def watch(redis_url: str, redis_client: redis.Redis) -> Iterator[ResourceWatch]:
    settings = Settings(redis_url=redis_url)
    # Never called here: the test drives the watch's Redis side with events it makes up.
    configuration = client.Configuration(host="https://127.0.0.1:1")
    backend = KubernetesBackend(settings, configuration)
    records = RecordStore(redis_client, 60, settings.app_label)
    waker = Waker(None, redis_client, records)  # type: ignore[arg-type]  # no wake-ups here
    redis_client.set(LEASE, "holder-a", px=60_000)
    yield ResourceWatch(backend, redis_client, NS, "jobs", "app=x", waker, holder="holder-a")
    backend.close()


def test_the_holder_writes_events(watch: ResourceWatch, redis_client: redis.Redis) -> None:
    assert watch._apply(job_event("j1", "7")) == "7"
    assert redis_client.hexists(cache.jobs_key(NS), "j1")
    assert redis_client.hget(cache.health_key(NS), "jobs_rv") == b"7"
    assert not watch.stopping.is_set()


def test_an_event_that_changes_nothing_the_cache_keeps_is_not_written(
    watch: ResourceWatch, redis_client: redis.Redis
) -> None:
    assert watch._apply(job_event("j1", "7")) == "7"
    # Marks the cached value: a write of the event would replace it.
    redis_client.hset(cache.jobs_key(NS), "j1", "as written")
    same = job_event("j1", "8")
    same["type"] = "MODIFIED"
    same["object"]["metadata"]["finalizers"] = []  # trimmed away: the cache does not keep it
    assert watch._apply(same) == "8"
    assert redis_client.hget(cache.jobs_key(NS), "j1") == b"as written"
    assert redis_client.hget(cache.health_key(NS), "jobs_rv") == b"7"
    # Its resourceVersion is written once RV_WRITE_SECONDS have passed since the last one.
    watch._rv_written_at -= RV_WRITE_SECONDS
    same["object"]["metadata"]["resourceVersion"] = "9"
    assert watch._apply(same) == "9"
    assert redis_client.hget(cache.health_key(NS), "jobs_rv") == b"9"
    assert redis_client.hget(cache.jobs_key(NS), "j1") == b"as written"
    changed = job_event("j1", "10")
    changed["object"]["status"] = {"active": 0, "succeeded": 1}
    assert watch._apply(changed) == "10"
    assert json.loads(redis_client.hget(cache.jobs_key(NS), "j1") or "")["status"] == {
        "active": 0,
        "succeeded": 1,
    }


def evalsha_calls(client_: redis.Redis) -> int:
    stats = client_.info("commandstats").get("cmdstat_evalsha") or {"calls": 0}
    return int(stats["calls"])


def test_events_that_piled_up_are_written_in_one_call(
    watch: ResourceWatch, redis_client: redis.Redis
) -> None:
    watch._apply(job_event("j0", "6"))  # loads the script: one EVALSHA per write from now on
    before = evalsha_calls(redis_client)
    deleted = job_event("j1", "9")
    deleted["type"] = "DELETED"
    assert watch._apply(job_event("j1", "7"), job_event("j2", "8"), deleted) == "9"
    assert evalsha_calls(redis_client) - before == 1
    # In order: j1 written then deleted (its tombstone left), j2 written, the last rv kept.
    assert not redis_client.hexists(cache.jobs_key(NS), "j1")
    assert redis_client.exists(cache.gone_key(NS, "j1"))
    assert redis_client.hexists(cache.jobs_key(NS), "j2")
    assert redis_client.hget(cache.health_key(NS), "jobs_rv") == b"9"
    # What the batch wrote is remembered: j2 again, unchanged, writes nothing.
    assert watch._apply(job_event("j2", "10")) == "10"
    assert evalsha_calls(redis_client) - before == 1


def test_a_holder_that_lost_its_lease_finds_out_from_events_that_change_nothing(
    watch: ResourceWatch, redis_client: redis.Redis
) -> None:
    assert watch._apply(job_event("j1", "7")) == "7"
    redis_client.set(LEASE, "holder-b", px=60_000)
    watch._rv_written_at -= RV_WRITE_SECONDS
    assert watch._apply(job_event("j1", "8")) is None
    assert watch.stopping.is_set()
    assert redis_client.hget(cache.health_key(NS), "jobs_rv") == b"7"


def test_a_former_holder_writes_nothing_and_stops(
    watch: ResourceWatch, redis_client: redis.Redis
) -> None:
    redis_client.set(LEASE, "holder-b", px=60_000)
    assert watch._apply(job_event("j1", "7")) is None
    assert not redis_client.exists(cache.jobs_key(NS))
    assert redis_client.hget(cache.health_key(NS), "jobs_rv") is None
    assert watch.stopping.is_set()


def test_a_takeover_while_the_writes_are_collected_voids_them(
    watch: ResourceWatch, redis_url: str
) -> None:
    other = redis.Redis.from_url(redis_url)
    writes = FencedWrites()
    writes.hset(cache.jobs_key(NS), "j1", "{}")
    # Another replica takes the namespace before this one's writes reach Redis.
    other.set(LEASE, "holder-b", px=60_000)
    assert not watch._fenced(writes)
    assert not other.exists(cache.jobs_key(NS))
    assert watch.stopping.is_set()
    other.close()


def test_its_own_renewal_meanwhile_does_not_stop_the_write(
    watch: ResourceWatch, redis_url: str
) -> None:
    other = redis.Redis.from_url(redis_url)
    writes = FencedWrites()
    writes.hset(cache.jobs_key(NS), "j1", "{}")
    # The holder's main thread renews the lease (PEXPIRE) at this moment.
    other.pexpire(LEASE, 60_000)
    assert watch._fenced(writes)
    assert other.hget(cache.jobs_key(NS), "j1") == b"{}"
    assert not watch.stopping.is_set()
    other.close()


def test_a_large_listing_is_written_whole(watch: ResourceWatch, redis_client: redis.Redis) -> None:
    # 5,000 Jobs are 10,000 HSET arguments: more than one Lua call can unpack at once.
    jobs = {f"j{i}": "{}" for i in range(5000)}
    writes = FencedWrites()
    writes.delete(cache.jobs_key(NS))
    writes.hset(cache.jobs_key(NS), mapping=jobs)
    writes.set(cache.gone_key(NS, "old"), "1", ex=60)
    writes.hdel(cache.jobs_key(NS), "j0")
    assert watch._fenced(writes)
    assert redis_client.hlen(cache.jobs_key(NS)) == 4999
    assert 0 < redis_client.ttl(cache.gone_key(NS, "old")) <= 60


@pytest.fixture
def watcher(redis_url: str, redis_client: redis.Redis) -> Iterator[Watcher]:
    settings = Settings(redis_url=redis_url, watch_namespaces=[NS])
    backend = KubernetesBackend(settings, client.Configuration(host="https://127.0.0.1:1"))
    records = RecordStore(redis_client, 60, settings.app_label)
    waker = Waker(None, redis_client, records)  # type: ignore[arg-type]  # no wake-ups here
    yield Watcher(settings, redis_client, backend, waker)
    backend.close()


def test_a_release_lets_go_of_its_own_lease_only(
    watcher: Watcher, redis_client: redis.Redis
) -> None:
    redis_client.set(LEASE, watcher.holder, px=60_000)
    redis_client.hset(cache.health_key(NS), "fresh", "1")
    watcher.held[NS] = NamespaceWatch([])
    watcher._release(NS)
    assert not redis_client.exists(LEASE)
    assert redis_client.hget(cache.health_key(NS), "fresh") == b"0"
    # Its lease moved on while it stalled: the new holder's lease and cache stay as they are.
    redis_client.set(LEASE, "holder-b", px=60_000)
    redis_client.hset(cache.health_key(NS), "fresh", "1")
    watcher.held[NS] = NamespaceWatch([])
    watcher._release(NS)
    assert redis_client.get(LEASE) == b"holder-b"
    assert redis_client.hget(cache.health_key(NS), "fresh") == b"1"
