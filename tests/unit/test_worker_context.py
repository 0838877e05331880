"""A worker process builds its context once, however many of its threads' tasks start at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import workers.app as worker_app


def test_racing_first_tasks_build_one_context(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    lock = threading.Lock()

    def slow_build() -> object:
        # As a real build is: long enough for every other thread to arrive meanwhile.
        time.sleep(0.05)
        made = object()
        with lock:
            built.append(made)
        return made

    monkeypatch.setattr(worker_app, "_context", None)
    monkeypatch.setattr(worker_app, "_build_context", slow_build)
    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: worker_app.context(), range(8)))
    assert len(built) == 1
    assert all(context is built[0] for context in seen)
