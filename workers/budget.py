"""One budget of Kubernetes API calls shared by every worker process: a token bucket in Redis.

A burst of submissions reaches many worker processes at once; each would call the API server
as fast as it can. The bucket lives in Redis so all of them, on every host, draw from the
same `JOBFERRY_API_QPS` (refill per second) and `JOBFERRY_API_BURST` (capacity).

A caller that finds the bucket empty reserves the next token anyway (the level goes below
zero) and sleeps until that token's time: callers are served in arrival order, and the calls
that go out in any window of t seconds never exceed `burst + qps * t`. The debt is bounded by
the number of callers waiting at once, which is the number of worker processes. A caller
whose wait would exceed `JOBFERRY_API_BUDGET_MAX_WAIT_SECONDS` takes nothing and gets a
`Throttled` error instead, which the tasks treat like any temporary API error.

The clock is Redis's (`TIME`), so hosts with skewed clocks share one timeline. A long-lived
watch is charged once when it opens, not per event it carries.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import redis

from workers.backends.base import TemporaryError

log = logging.getLogger("jobferry")

BUDGET_KEY = "jobferry:api-budget"

# KEYS[1] the bucket (hash: tokens, at). ARGV: qps, burst, max wait (s).
# Returns the wait in microseconds before the caller may go (0: now), or -1 when refused.
_TAKE = """
local qps, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * qps)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / qps end
if wait > max_wait then
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  return -1
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / qps) + 60)
return math.floor(wait * 1000000)
"""


class Throttled(TemporaryError):
    """The shared API budget is spent for longer than a caller may wait."""

    reason = "ClientThrottled"


class Budget(Protocol):
    def acquire(self) -> None:
        """Return when one API call may go out; raise `Throttled` when that is too far off."""


class Unlimited:
    """No budget (`JOBFERRY_API_QPS=0`): every call goes out at once."""

    def acquire(self) -> None:
        return None


class TokenBucket:
    """The shared budget. Thread- and process-safe: every decision is one Lua script."""

    def __init__(
        self,
        client: redis.Redis,
        qps: float,
        burst: int,
        max_wait_seconds: float,
        key: str = BUDGET_KEY,
    ) -> None:
        self._redis = client
        self._args = (qps, burst, max_wait_seconds)
        self._max_wait = max_wait_seconds
        self._key = key

    def take(self) -> float | None:
        """Reserve one token; the seconds to wait before using it, or None when refused."""
        try:
            micros = int(self._redis.eval(_TAKE, 1, self._key, *self._args))
        # No Redis, no shared budget: the call is as temporary a failure as the API's own.
        except redis.RedisError as exc:
            raise TemporaryError(
                f"the shared API budget in Redis is unavailable: {exc}", reason="ApiUnavailable"
            ) from exc
        return None if micros < 0 else micros / 1_000_000

    def acquire(self) -> None:
        wait = self.take()
        if wait is None:
            raise Throttled(
                f"the shared Kubernetes API budget ({self._args[0]} requests/s, burst "
                f"{self._args[1]}) is spent for more than {self._max_wait} s; raise "
                "JOBFERRY_API_QPS if the API server can take more",
                retry_after=self._max_wait,
            )
        if wait > 0:
            time.sleep(wait)


def make_budget(
    client: redis.Redis, qps: float, burst: int, max_wait_seconds: float
) -> TokenBucket | Unlimited:
    if qps <= 0:
        return Unlimited()
    return TokenBucket(client, qps, burst, max_wait_seconds)
