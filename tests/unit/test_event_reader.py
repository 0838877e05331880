"""A watch's reader hands its writer the events that piled up, then what broke the watch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from workers.backends.base import Gone
from workers.watcher import BATCH_EVENTS, EventReader


def event(rv: int) -> dict[str, Any]:
    return {"type": "MODIFIED", "object": {"metadata": {"name": "j", "resourceVersion": str(rv)}}}


def reader_of(events: Iterator[dict[str, Any]]) -> EventReader:
    reader = EventReader(events, "test")
    reader.start()
    reader.join(timeout=10)  # all read before the writer looks: one burst
    return reader


def test_events_read_while_the_writer_was_busy_come_as_one_batch() -> None:
    reader = reader_of(iter([event(1), event(2), event(3)]))
    assert list(reader.batches(threading.Event())) == [[event(1), event(2), event(3)]]


def test_a_batch_holds_at_most_batch_events() -> None:
    reader = reader_of(iter([event(i) for i in range(BATCH_EVENTS + 1)]))
    sizes = [len(batch) for batch in reader.batches(threading.Event())]
    assert sizes == [BATCH_EVENTS, 1]


def test_what_broke_the_watch_is_raised_after_the_events_read_before_it() -> None:
    def events() -> Iterator[dict[str, Any]]:
        yield event(1)
        yield event(2)
        raise Gone("too old resource version: 1 (5)")

    batches = reader_of(events()).batches(threading.Event())
    assert next(batches) == [event(1), event(2)]
    with pytest.raises(Gone, match="too old resource version"):
        next(batches)


def test_the_writer_stops_waiting_when_told_to() -> None:
    blocked, released = threading.Event(), threading.Event()

    def events() -> Iterator[dict[str, Any]]:
        try:
            blocked.wait(10)  # a quiet watch: no event comes
            yield event(1)
            yield event(2)
        finally:
            released.set()  # where the real stream gives its connection back

    reader = EventReader(events(), "test")
    reader.start()
    stopping = threading.Event()
    stopping.set()
    assert list(reader.batches(stopping)) == []
    reader.abandon()
    blocked.set()
    reader.join(timeout=10)
    assert not reader.is_alive()
    # Closed when the reader ends, while the reader itself is still referenced.
    assert released.is_set()
