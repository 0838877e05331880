"""`Jobferry.submit_many` on a real redis-server: all or nothing, each workflow once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from scheduler import (
    BrokerUnavailableError,
    Jobferry,
    OutcomeState,
    Settings,
    WorkflowConflictError,
    WorkflowRequest,
)
from scheduler.records import INFLIGHT_KEY, RecordStore
from tests.integration.conftest import Pipeline


def echo(workflow_id: str, text: str = "ran") -> WorkflowRequest:
    return WorkflowRequest(
        workflow_id=workflow_id,
        image="local",
        command=["sh", "-c", f"echo {workflow_id} {text} >> ../../runs.txt"],
    )


@pytest.fixture
def producer(redis_url: str) -> Iterator[Jobferry]:
    client = Jobferry(Settings(redis_url=redis_url))
    yield client
    client.close()


def queued(client: redis.Redis) -> int:
    return int(client.llen(Settings().launch_queue))


def test_each_workflow_runs_once_and_the_handles_keep_the_order(local_pipeline: Pipeline) -> None:
    client = local_pipeline.client
    client.submit(echo("before"))
    requests = [echo("b"), echo("before"), echo("a"), echo("b"), echo("c")]
    handles = client.submit_many(requests)
    assert [h.workflow_id for h in handles] == ["b", "before", "a", "b", "c"]
    local_pipeline.start_worker()
    assert {h.wait(timeout=60).state for h in handles} == {OutcomeState.SUCCEEDED}
    runs = Path(local_pipeline.env["JOBFERRY_LOCAL_STATE_DIR"], "runs.txt").read_text()
    assert sorted(runs.splitlines()) == ["a ran", "b ran", "before ran", "c ran"]


def test_a_conflict_with_a_stored_workflow_queues_none_of_them(
    producer: Jobferry, redis_client: redis.Redis
) -> None:
    producer.submit(echo("taken"))
    with pytest.raises(WorkflowConflictError, match="taken") as raised:
        producer.submit_many([echo("new-1"), echo("taken", "differently"), echo("new-2")])
    assert "Nothing was queued" in str(raised.value)
    store = RecordStore(redis_client, 3600, "jobferry")
    assert store.get("new-1") is None and store.get("new-2") is None
    assert store.inflight() == ["taken"]
    assert queued(redis_client) == 1


def test_one_id_twice_with_different_requests_is_refused_before_anything_is_written(
    producer: Jobferry, redis_client: redis.Redis
) -> None:
    with pytest.raises(WorkflowConflictError, match="twice") as raised:
        producer.submit_many([echo("x"), echo("y"), echo("x", "again")])
    assert "x" in str(raised.value)
    assert redis_client.zcard(INFLIGHT_KEY) == 0
    assert redis_client.dbsize() == 0


@pytest.fixture
def no_lpush_url(redis_url: str, redis_client: redis.Redis) -> Iterator[str]:
    """A Redis user that may write records but not push onto a queue: every publish fails."""
    redis_client.acl_setuser(
        "no-lpush",
        enabled=True,
        passwords=["+s3cret-pw"],
        keys=["~*"],
        channels=["&*"],
        commands=["+@all", "-lpush"],
    )
    parts = urlsplit(redis_url)
    yield urlunsplit(parts._replace(netloc=f"no-lpush:s3cret-pw@{parts.netloc}"))
    redis_client.acl_deluser("no-lpush")


@pytest.mark.parametrize("many", [False, True], ids=["submit", "submit_many"])
def test_a_launch_that_cannot_be_queued_leaves_no_record(
    no_lpush_url: str, redis_client: redis.Redis, many: bool
) -> None:
    client = Jobferry(Settings(redis_url=no_lpush_url))
    try:
        with pytest.raises(BrokerUnavailableError, match="nothing was queued") as raised:
            if many:
                client.submit_many([echo("p"), echo("q")])
            else:
                client.submit(echo("p"))
    finally:
        client.close()
    assert "s3cret-pw" not in str(raised.value)
    # No record left behind, so the same requests can be submitted again.
    assert redis_client.keys(RecordStore.key("*")) == []
    assert redis_client.zcard(INFLIGHT_KEY) == 0
    assert queued(redis_client) == 0
