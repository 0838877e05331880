"""The status cache's freshness on a real redis-server, as launches and checks ask it."""

from __future__ import annotations

import time

import redis

from workers import cache


def beat(client: redis.Redis, fresh: bool, age: float = 0.0) -> None:
    mapping = {"fresh": "1" if fresh else "0", "heartbeat_at": str(time.time() - age)}
    client.hset(cache.health_key("team-a"), mapping=mapping)


def test_fresh_follows_the_heartbeat_within_a_second(redis_client: redis.Redis) -> None:
    status_cache = cache.StatusCache(redis_client, stale_seconds=15)
    assert not status_cache.fresh("team-a")  # no watcher has written a heartbeat
    beat(redis_client, fresh=True)
    # Remembered for a second: a burst of launches reads Redis once.
    assert not status_cache.fresh("team-a")
    time.sleep(1.05)
    assert status_cache.fresh("team-a")
    beat(redis_client, fresh=True, age=20)  # the watcher stopped beating
    time.sleep(1.05)
    assert not status_cache.fresh("team-a")
    assert cache.StatusCache(redis_client, stale_seconds=30).fresh("team-a")
    beat(redis_client, fresh=False)  # it beats, but its watch is down
    assert not cache.StatusCache(redis_client, stale_seconds=30).fresh("team-a")
