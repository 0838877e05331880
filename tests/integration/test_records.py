"""Workflow records on a real redis-server: atomic create, state changes, one outcome wins."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import redis

from scheduler.models import OutcomeState, WorkflowOutcome, WorkflowRequest, WorkflowState
from scheduler.records import INFLIGHT_KEY, RecordStore

REQUEST = WorkflowRequest(
    workflow_id="wf-1", image="busybox:1.36", command=["true"], deadline_seconds=600
)


def outcome(state: OutcomeState, reason: str) -> WorkflowOutcome:
    return WorkflowOutcome(workflow_id="wf-1", state=state, reason=reason, message=reason)


def test_create_is_once_and_returns_the_existing_digest(redis_client: redis.Redis) -> None:
    store = RecordStore(redis_client, 3600, "jobferry")
    assert store.create(REQUEST) is None
    assert store.create(REQUEST) == REQUEST.digest()
    status = store.get("wf-1")
    assert status is not None
    assert status.state is WorkflowState.QUEUED
    assert status.job_name.startswith("jobferry-wf-1-")
    loaded = store.load("wf-1")
    assert loaded is not None
    assert (loaded.status, loaded.request) == (status, REQUEST)
    assert status.deadline_at is not None
    assert (status.deadline_at - status.submitted_at).total_seconds() == REQUEST.deadline_seconds
    assert store.inflight() == ["wf-1"]
    assert store.namespaces() == [REQUEST.namespace]
    ttl = redis_client.ttl(store.key("wf-1"))
    assert 3600 < ttl <= 4200


def test_first_outcome_wins_and_later_updates_are_refused(redis_client: redis.Redis) -> None:
    store = RecordStore(redis_client, 7 * 24 * 3600, "jobferry")
    store.create(REQUEST)
    assert store.set_state("wf-1", WorkflowState.RUNNING, "running (attempt 1)")
    first = store.finish(outcome(OutcomeState.CANCELLED, "Cancelled"))
    second = store.finish(outcome(OutcomeState.SUCCEEDED, "Completed"))
    assert first.state is second.state is OutcomeState.CANCELLED
    assert not store.set_state("wf-1", WorkflowState.RUNNING, "late")
    assert not store.request_cancel("wf-1")
    status = store.get("wf-1")
    assert status is not None and status.state is WorkflowState.FINISHED
    assert redis_client.zcard(INFLIGHT_KEY) == 0
    assert redis_client.ttl(store.key("wf-1")) > 6 * 24 * 3600


def test_racing_finishers_store_exactly_one_outcome(redis_client: redis.Redis) -> None:
    store = RecordStore(redis_client, 3600, "jobferry")
    store.create(REQUEST)
    winners: list[OutcomeState] = []
    states = [OutcomeState.SUCCEEDED, OutcomeState.CANCELLED] * 10

    def finish(state: OutcomeState) -> None:
        winners.append(store.finish(outcome(state, state.value)).state)

    threads = [threading.Thread(target=finish, args=(s,)) for s in states]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(winners)) == 1


def test_missing_record(redis_client: redis.Redis) -> None:
    store = RecordStore(redis_client, 3600, "jobferry")
    assert store.get("nope") is None
    assert not store.set_state("nope", WorkflowState.RUNNING, "x")
    lost = outcome(OutcomeState.FAILED, "JobDeleted")
    assert store.finish(lost) == lost


def test_namespaces_are_known_until_their_last_records_expire(redis_client: redis.Redis) -> None:
    store = RecordStore(redis_client, 3600, "jobferry")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store.create(REQUEST.model_copy(update={"namespace": "old"}), now=now)
    recent = REQUEST.model_copy(update={"workflow_id": "wf-2", "namespace": "recent"})
    store.create(recent, now=datetime.now(UTC))
    # The old namespace's only deadline passed more than the outcome retention ago.
    assert store.namespaces() == ["recent"]
    assert store.namespaces(deadline_after=0) == ["old", "recent"]
    assert store.prune_namespaces() == 1
    assert store.namespaces(deadline_after=0) == ["recent"]
    # A later deadline in the same namespace raises its score; an earlier one does not lower it.
    store.create(recent.model_copy(update={"workflow_id": "wf-3"}), now=now)
    assert store.namespaces() == ["recent"]


def test_a_launch_keeps_the_running_detail_the_watcher_wrote_first(
    redis_client: redis.Redis,
) -> None:
    store = RecordStore(redis_client, 3600, "jobferry")
    store.create(REQUEST)
    assert store.set_state("wf-1", WorkflowState.RUNNING, "pod running (attempt 1)")
    launched = "Job created, waiting for its pod"
    assert store.set_state("wf-1", WorkflowState.RUNNING, launched, keep_if_there=True)
    status = store.get("wf-1")
    assert status is not None and status.detail == "pod running (attempt 1)"
    # From any other state the launch's detail is written; after the end, nothing is.
    store.create(REQUEST.model_copy(update={"workflow_id": "wf-2"}))
    assert store.set_state("wf-2", WorkflowState.RUNNING, launched, keep_if_there=True)
    status = store.get("wf-2")
    assert status is not None and status.detail == launched
    store.finish(outcome(OutcomeState.CANCELLED, "Cancelled"))
    assert not store.set_state("wf-1", WorkflowState.RUNNING, launched, keep_if_there=True)


def test_a_launch_reads_the_record_and_marks_it_launching_at_once(
    redis_client: redis.Redis,
) -> None:
    store = RecordStore(redis_client, 3600, "jobferry")
    assert store.begin_launch("wf-1") is None
    store.create(REQUEST)
    loaded = store.begin_launch("wf-1")
    # What the launch works from is the record as it was; the record itself moved on.
    assert loaded is not None and loaded.status.state is WorkflowState.QUEUED
    assert loaded.request == REQUEST
    status = store.get("wf-1")
    assert status is not None and status.state is WorkflowState.LAUNCHING
    assert status.detail == f"creating Job {status.job_name}"
    # A launch delivered again finds it launching, and leaves a running workflow running.
    again = store.begin_launch("wf-1")
    assert again is not None and again.status.state is WorkflowState.LAUNCHING
    assert store.set_state("wf-1", WorkflowState.RUNNING, "pod running (attempt 1)")
    assert store.begin_launch("wf-1") is not None
    status = store.get("wf-1")
    assert status is not None and status.state is WorkflowState.RUNNING
    assert status.detail == "pod running (attempt 1)"
    # After the end nothing changes.
    store.finish(outcome(OutcomeState.CANCELLED, "Cancelled"))
    assert store.begin_launch("wf-1") is not None
    status = store.get("wf-1")
    assert status is not None and status.state.value == "finished"


def test_a_launch_gives_an_untraced_workflow_its_trace_context(
    redis_client: redis.Redis,
) -> None:
    store = RecordStore(redis_client, 3600, "jobferry")
    launch = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    # No record: nothing is written.
    assert store.begin_launch("wf-1", launch) is None
    assert not redis_client.exists(store.key("wf-1"))
    # Submitted without a trace context: the launch's becomes the workflow's.
    store.create(REQUEST)
    loaded = store.begin_launch("wf-1", launch)
    assert loaded is not None and loaded.trace_carrier == {}
    assert store.trace_carrier("wf-1") == launch
    # Submitted with one: it stays.
    producer = {"traceparent": "00-" + "c" * 32 + "-" + "d" * 16 + "-01"}
    other = REQUEST.model_copy(update={"workflow_id": "wf-2"})
    store.create(other, trace_carrier=producer)
    store.begin_launch("wf-2", launch)
    assert store.trace_carrier("wf-2") == producer
