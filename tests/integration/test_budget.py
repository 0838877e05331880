"""The shared API budget on a real redis-server, drawn on by real processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis

from tests.services import ROOT, wait_for
from workers.budget import Throttled, TokenBucket, Unlimited, make_budget

pytestmark = pytest.mark.redis

TAKER = """
import json, sys, threading, time
import redis
from workers.budget import TokenBucket

url, qps, burst = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
client = redis.Redis.from_url(url)
bucket = TokenBucket(client, qps, burst, max_wait_seconds=60)
client.incr("takers-ready")
while (go := client.get("takers-until")) is None:
    time.sleep(0.01)
until = float(go)
times = []

def take():
    while time.time() < until:
        wait = bucket.take()
        # The moment this call is allowed to go out (what a real caller sleeps until).
        times.append(time.time() + wait)
        time.sleep(wait)

threads = [threading.Thread(target=take) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(times))
"""


def test_concurrent_processes_never_exceed_burst_plus_rate(
    redis_url: str, redis_client: redis.Redis
) -> None:
    qps, burst, seconds = 20.0, 10, 3.0
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, redis_url, str(qps), str(burst)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    # Every process is up (imports done) before the first call.
    wait_for("4 takers ready", lambda: int(redis_client.get("takers-ready") or 0) == 4, 120)
    redis_client.set("takers-until", str(time.time() + seconds))
    times = sorted(t for p in takers for t in json.loads(p.communicate(timeout=120)[0]))
    assert all(p.returncode == 0 for p in takers)
    # 12 threads want as much as they can get: the budget, not the callers, sets the pace.
    assert len(times) >= burst + qps * (times[-1] - times[0]) * 0.8, len(times)
    for i, first in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - first
            # +1: the float timeline of Redis and of time.time() differ by microseconds.
            assert j - i + 1 <= burst + qps * window + 1, (i, j, window)


def test_a_wait_beyond_the_bound_takes_nothing_and_says_why(redis_client: redis.Redis) -> None:
    bucket = TokenBucket(redis_client, qps=1.0, burst=2, max_wait_seconds=0.5)
    bucket.acquire()
    bucket.acquire()
    with pytest.raises(Throttled) as caught:
        bucket.acquire()
    assert caught.value.reason == "ClientThrottled"
    assert "JOBFERRY_API_QPS" in caught.value.message
    # The refused call reserved nothing: after one second exactly one token is back.
    time.sleep(1.05)
    assert bucket.take() == 0.0
    assert bucket.take() is None


def test_qps_zero_means_no_budget(redis_client: redis.Redis) -> None:
    assert isinstance(make_budget(redis_client, 0, 1, 1), Unlimited)
    assert isinstance(make_budget(redis_client, 5, 1, 1), TokenBucket)
