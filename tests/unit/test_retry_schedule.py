from __future__ import annotations

import random

from workers.tasks import backoff


def test_backoff_is_jittered_below_an_exponential_cap() -> None:
    random.seed(7)
    for attempt in range(12):
        ceiling = min(60.0, 1.0 * 2**attempt)
        delays = [backoff(attempt, 1.0, 60.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range
        assert min(delays) < ceiling * 0.2


def test_retry_after_from_the_server_is_a_floor() -> None:
    assert all(backoff(0, 1.0, 60.0, hint=5.0) >= 5.0 for _ in range(100))
