"""Start-up checks: a worker refuses to start on settings it cannot work with.

Better a clear error at `jobferry worker` than a worker that takes tasks and fails each one.
"""

from __future__ import annotations

import os

import redis

from scheduler.errors import BrokerUnavailableError
from scheduler.settings import Settings, redact_url
from workers.backends import make_backend


def preflight(settings: Settings) -> None:
    """Check Redis and the job backend's configuration.

    Raises:
        BrokerUnavailableError: Redis does not answer.
        RequestError: the backend has no usable configuration (e.g. no kubeconfig).
    """
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        client.ping()
    # Unreachable or refusing: the worker could not take a single task.
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailableError(
            f"cannot reach Redis at {redact_url(settings.redis_url)} ({exc}); start Redis or "
            "set JOBFERRY_REDIS_URL"
        ) from exc
    finally:
        client.close()
    make_backend(settings, os.environ).close()
