"""A throwaway Redis for `jobferry demo`: the real `redis-server` when installed, else fakeredis.

fakeredis's TCP server speaks the Redis protocol on a local port; its `lua` extra runs the
scripts Celery's result backend and jobferry's workflow records need.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from scheduler.errors import RequestError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_redis(prefer: str = "auto") -> Iterator[tuple[str, str]]:
    """Yield (redis URL, what serves it) for the duration of the block.

    Parameters:
        prefer: `auto` (redis-server when on PATH, else fakeredis), `redis-server`, `fakeredis`.
    """
    port = free_port()
    server = shutil.which("redis-server") if prefer != "fakeredis" else None
    if prefer == "redis-server" and server is None:
        raise RequestError("--redis redis-server: no redis-server on PATH")
    if server is not None:
        with tempfile.TemporaryDirectory(prefix="jobferry-redis-") as workdir:
            process = subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                    "--maxmemory-policy",
                    "noeviction",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"redis://127.0.0.1:{port}/0"
                _wait_ready(url)
                yield url, f"redis-server ({server})"
            finally:
                process.terminate()
                process.wait(timeout=10)
        return
    from fakeredis import TcpFakeServer

    fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        _wait_ready(url)
        yield url, "fakeredis (embedded)"
    finally:
        fake.shutdown()
        fake.server_close()


def _wait_ready(url: str, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url)
    give_up = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            client.close()
            return
        # Still starting: keep asking until the timeout.
        except redis.ConnectionError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.05)
