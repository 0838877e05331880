"""The authoritative record of each workflow, kept in Redis beside the queue.

Celery's result backend only learns about a workflow when a task ends, and a retry that could
not be published ends the poll loop silently. The record is written before anything is queued
and updated at every state change, so `status` always has an answer, a repeat submission finds
the original, and a finished workflow keeps exactly one outcome: whichever of the status check
or a cancel finishes it first wins, atomically (a Lua script), and the other reads the winner.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import redis
from redis.client import Pipeline

from scheduler.models import (
    WorkflowOutcome,
    WorkflowRequest,
    WorkflowState,
    WorkflowStatus,
)
from scheduler.naming import job_name

KEY_PREFIX = "jobferry:workflow:"
INFLIGHT_KEY = "jobferry:inflight"
NAMESPACES_KEY = "jobferry:namespaces:until"
"""Each namespace workflows were submitted to, scored by the latest deadline among them."""
PARKED_KEY = "jobferry:checks:parked"
"""Status checks waiting in Redis for their time instead of in a worker's memory: the
workflow's record key, scored by when its check is due (epoch milliseconds). See
`workers.parking`."""

# Creates the record unless it exists, indexes it as in flight and notes its namespace with
# the latest deadline there (the watcher watches those, unless told which); returns the
# existing digest, or "" when created.
_CREATE = """
local existing = redis.call('HGET', KEYS[1], 'digest')
if existing then return existing end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), KEYS[1])
redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[3])
return ''
"""

# Updates fields unless the workflow has finished; returns 1 when updated, 2 when left as it
# is because its state is ARGV[1] already (when ARGV[1] is not empty).
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'finished' then return 0 end
if ARGV[1] ~= '' and state == ARGV[1] then return 2 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""

# A launch starts: returns the record as it was (HGETALL) and, when it is queued (or launching:
# a launch delivered again) with no outcome, moves it to launching with detail ARGV[1] followed
# by the Job's name, updated at ARGV[2]. The trace context pairs from ARGV[3] on are stored
# unless the record has its own (HSETNX: a workflow from an untraced producer takes the
# launch's). One round trip where a read and two writes were three.
_BEGIN_LAUNCH = """
local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then return raw end
local fields = {}
for i = 1, #raw, 2 do fields[raw[i]] = raw[i + 1] end
local state = fields['state']
if (state == 'queued' or state == 'launching') and not fields['outcome'] then
  local detail = ARGV[1] .. (fields['job_name'] or '')
  redis.call('HSET', KEYS[1], 'state', 'launching', 'detail', detail, 'updated_at', ARGV[2])
end
for i = 3, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
return raw
"""

# Stores the outcome unless one is stored, and forgets the workflow's parked check; returns
# the outcome that is stored now.
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local stored = redis.call('HGET', KEYS[1], 'outcome')
if stored then return stored end
redis.call('HSET', KEYS[1], 'state', 'finished', 'outcome', ARGV[1], 'updated_at', ARGV[2],
           'detail', ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
return ARGV[1]
"""

# The W3C trace context fields a record may carry (see scheduler/tracing.py).
TRACE_FIELDS = ("traceparent", "tracestate")

# A status check reports in: records when it last ran, unless a newer check loop replaced
# it (the reconciler's resend bumps `check_epoch`). Returns 1, 0 when superseded, -1 when
# the workflow has finished or its record is gone.
_CHECKED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'state') == 'finished' then return -1 end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'check_epoch') or '0')
if tonumber(ARGV[1]) < epoch then return 0 end
redis.call('HSET', KEYS[1], 'last_checked', ARGV[2])
return 1
"""

# The reconciler claims a silent workflow: when neither a check nor a resend happened for
# ARGV[2] seconds, start a new check epoch and return it (0: nothing to do). One claim per
# silence period, however many reconcilers run.
_CLAIM_RESEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'finished' then return 0 end
local now, silence = tonumber(ARGV[1]), tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_checked') or '0')
local resent = tonumber(redis.call('HGET', KEYS[1], 'resent_at') or '0')
if now - math.max(last, resent) < silence then return 0 end
redis.call('HSET', KEYS[1], 'resent_at', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'check_epoch', 1)
"""

# Claims up to ARGV[2] parked checks due at ARGV[1] (ms) or earlier: each is rescored to
# ARGV[3], when it is due again unless its sender confirms it sent it. Returns member, due
# pairs. Two releasers never claim the same check; one that dies after claiming loses none.
_CLAIM_PARKED = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #due, 2 do redis.call('ZADD', KEYS[1], ARGV[3], due[i]) end
return due
"""

# The claimed checks ARGV[2..] were sent: forgets each still scored ARGV[1] (its claim). One
# rescored meanwhile was parked again by the check that was sent, and stays.
_PARKED_SENT = """
local forgotten = 0
for i = 2, #ARGV do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == tonumber(ARGV[1]) then
    forgotten = forgotten + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return forgotten
"""


def utcnow() -> datetime:
    return datetime.now(UTC)


class RecordStore:
    """Workflow records in Redis: one hash per workflow id, plus an index of those in flight."""

    def __init__(self, client: redis.Redis, outcome_ttl_seconds: int, app_label: str) -> None:
        self._redis = client
        self._outcome_ttl = outcome_ttl_seconds
        self._app_label = app_label
        self._create = _Script(client, _CREATE)
        self._update = _Script(client, _UPDATE)
        self._finish = _Script(client, _FINISH)
        self._begin_launch = _Script(client, _BEGIN_LAUNCH)
        self._checked = _Script(client, _CHECKED)
        self._claim_resend = _Script(client, _CLAIM_RESEND)
        self._claim_parked = _Script(client, _CLAIM_PARKED)
        self._parked_sent = _Script(client, _PARKED_SENT)

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    @staticmethod
    def key(workflow_id: str) -> str:
        return KEY_PREFIX + workflow_id

    def create(
        self,
        request: WorkflowRequest,
        now: datetime | None = None,
        trace_carrier: Mapping[str, str] | None = None,
    ) -> str | None:
        """Write a new `queued` record; return None, or the digest of the record already there.

        `trace_carrier` is the submit span's W3C context: every task of the workflow hangs its
        spans under it, so the workflow is one trace.
        """
        keys, args = self._create_call(request, now or utcnow(), trace_carrier)
        return _text(self._create(keys=keys, args=args)) or None

    def create_many(
        self,
        requests: Sequence[tuple[WorkflowRequest, Mapping[str, str] | None]],
        now: datetime | None = None,
    ) -> list[str | None]:
        """`create` for each (request, trace carrier) pair, in one round trip (a pipeline)."""
        now = now or utcnow()
        pipe = self._redis.pipeline(transaction=False)
        for request, carrier in requests:
            keys, args = self._create_call(request, now, carrier)
            self._create(keys=keys, args=args, client=pipe)
        return [_text(found) or None for found in pipe.execute()]

    def discard(self, workflow_ids: Sequence[str]) -> None:
        """Remove the records of workflows that were never queued (their submit failed)."""
        if not workflow_ids:
            return
        keys = [self.key(workflow_id) for workflow_id in workflow_ids]
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(*keys)
        pipe.zrem(INFLIGHT_KEY, *keys)
        pipe.execute()

    def _create_call(
        self, request: WorkflowRequest, now: datetime, trace_carrier: Mapping[str, str] | None
    ) -> tuple[list[str], list[str | int | float]]:
        deadline = now.timestamp() + request.deadline_seconds
        fields: dict[str, str] = {
            "request": request.model_dump_json(),
            "digest": request.digest(),
            "state": WorkflowState.QUEUED.value,
            "job_name": job_name(request.workflow_id, self._app_label),
            "namespace": request.namespace,
            "submitted_at": now.isoformat(),
            "updated_at": now.isoformat(),
            "deadline": str(deadline),
            "detail": "waiting for a launch worker",
            "last_checked": str(now.timestamp()),
        }
        fields.update(_trace_fields(trace_carrier))
        ttl = request.deadline_seconds + self._outcome_ttl
        args: list[str | int | float] = [ttl, deadline, request.namespace, *_flatten(fields)]
        return [self.key(request.workflow_id), INFLIGHT_KEY, NAMESPACES_KEY], args

    def get(self, workflow_id: str) -> WorkflowStatus | None:
        raw = self._hash(workflow_id)
        return _status(workflow_id, raw) if raw else None

    def load(self, workflow_id: str) -> Loaded | None:
        """Everything a task works from, in one read: status, request and trace context."""
        return _loaded(workflow_id, self._hash(workflow_id))

    def begin_launch(
        self, workflow_id: str, carrier: Mapping[str, str] | None = None
    ) -> Loaded | None:
        """`load`, and in the same round trip a queued workflow (or one a launch is already
        creating) becomes `launching`, "creating Job <name>", and a record without a trace
        context takes `carrier` (the launch's). The record returned is the one read before
        that: its state says whether the launch moved it."""
        trace = _flatten(_trace_fields(carrier))
        flat = cast(
            list[Any],
            self._begin_launch(
                keys=[self.key(workflow_id)],
                args=["creating Job ", utcnow().isoformat(), *trace],
            ),
        )
        raw = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        return _loaded(workflow_id, raw)

    def set_state(
        self, workflow_id: str, state: WorkflowState, detail: str, *, keep_if_there: bool = False
    ) -> bool:
        """Move an unfinished workflow to `state`; False when it has finished meanwhile.

        With `keep_if_there`, a workflow in `state` already keeps its detail (and True is
        returned): a launch must not overwrite the running pod the watcher wrote first.
        """
        fields = {"state": state.value, "detail": detail, "updated_at": utcnow().isoformat()}
        keep = state.value if keep_if_there else ""
        return self._fields(workflow_id, fields, keep) in (1, 2)

    def request_cancel(self, workflow_id: str) -> bool:
        """Flag an unfinished workflow for cancellation; False when it has finished."""
        fields = {"cancel_requested": "1", "updated_at": utcnow().isoformat()}
        return self._fields(workflow_id, fields) == 1

    def mark_deleting(self, workflow_id: str, now: float | None = None) -> bool:
        """Say that jobferry itself is deleting the workflow's Job (deadline, cancel, stuck),
        so a check that finds the Job gone does not call it deleted by someone else."""
        fields = {"deleting_at": str(time.time() if now is None else now)}
        return self._fields(workflow_id, fields) == 1

    def deleting_since(self, workflow_id: str) -> float | None:
        """When jobferry started deleting the workflow's Job (epoch seconds), if it did."""
        raw = self._redis.hget(self.key(workflow_id), "deleting_at")
        return None if raw is None else float(_text(raw))

    def finish(self, outcome: WorkflowOutcome) -> WorkflowOutcome:
        """Store the outcome unless one is stored already; return the one that is stored."""
        detail = f"{outcome.state.value}: {outcome.reason}"
        args: list[str | int] = [
            outcome.model_dump_json(),
            utcnow().isoformat(),
            self._outcome_ttl,
            detail,
        ]
        keys = [self.key(outcome.workflow_id), INFLIGHT_KEY, PARKED_KEY]
        stored = self._finish(keys=keys, args=args)
        if stored is None:
            # The record expired or never existed: keep the outcome anyway, for the caller.
            return outcome
        return WorkflowOutcome.model_validate_json(_text(stored))

    def trace_carrier(self, workflow_id: str) -> dict[str, str]:
        """The W3C trace context stored with the workflow; {} when it has none."""
        values = cast(list[Any], self._redis.hmget(self.key(workflow_id), list(TRACE_FIELDS)))
        return _carrier(values)

    def inflight_count(self) -> int:
        """How many workflows have not finished."""
        return int(self._redis.zcard(INFLIGHT_KEY))

    def mark_checked(self, workflow_id: str, epoch: int, now: float | None = None) -> int:
        """Record that check loop `epoch` ran now: 1; 0 when a newer loop replaced it; -1 when
        the workflow has finished or has no record."""
        now = time.time() if now is None else now
        return int(self._checked(keys=[self.key(workflow_id)], args=[epoch, now]))

    def claim_resend(
        self, workflow_id: str, silence_seconds: float, now: float | None = None
    ) -> int:
        """The new check epoch when the workflow's checks were silent `silence_seconds`; else 0."""
        now = time.time() if now is None else now
        return int(self._claim_resend(keys=[self.key(workflow_id)], args=[now, silence_seconds]))

    def park_check(self, workflow_id: str, due: float) -> None:
        """Park the workflow's status check until `due` (epoch seconds); a workflow has one
        parked check at most, so parking again only moves it."""
        self._redis.zadd(PARKED_KEY, {self.key(workflow_id): _ms(due)})

    def parked_count(self) -> int:
        return int(self._redis.zcard(PARKED_KEY))

    def claim_parked(
        self, limit: int, hold_seconds: float, now: float | None = None
    ) -> tuple[int, list[ParkedCheck]]:
        """Claim up to `limit` parked checks that are due: (the claim, the checks).

        A claimed check comes due again after `hold_seconds` unless `parked_sent` is called
        with the claim, so a releaser that dies before it has sent them loses none.
        """
        now = time.time() if now is None else now
        claim = _ms(now + hold_seconds)
        flat = cast(list[Any], self._claim_parked(keys=[PARKED_KEY], args=[_ms(now), limit, claim]))
        keys = [_text(flat[i]) for i in range(0, len(flat), 2)]
        if not keys:
            return claim, []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, ["state", "check_epoch", *TRACE_FIELDS])
        checks = []
        for index, (key, (state, epoch, *trace)) in enumerate(
            zip(keys, pipe.execute(), strict=True)
        ):
            checks.append(
                ParkedCheck(
                    workflow_id=key.removeprefix(KEY_PREFIX),
                    due=float(_text(flat[2 * index + 1])) / 1000,
                    epoch=int(_text(epoch) or 0),
                    finished=state is None or _text(state) == WorkflowState.FINISHED.value,
                    trace_carrier=_carrier(trace),
                )
            )
        return claim, checks

    def parked_sent(self, claim: int, workflow_ids: Sequence[str]) -> int:
        """Forget the checks of `claim` that were sent; how many were forgotten."""
        if not workflow_ids:
            return 0
        members = [self.key(workflow_id) for workflow_id in workflow_ids]
        return int(self._parked_sent(keys=[PARKED_KEY], args=[claim, *members]))

    def namespaces(self, deadline_after: float | None = None) -> list[str]:
        """Namespaces with a workflow whose deadline is after `deadline_after` (epoch seconds).

        By default, those where a workflow's record may still exist (its deadline was less
        than the outcome retention ago).
        """
        if deadline_after is None:
            deadline_after = time.time() - self._outcome_ttl
        found = self._redis.zrangebyscore(NAMESPACES_KEY, f"({deadline_after}", "+inf")
        return sorted(_text(ns) for ns in cast(list[Any], found))

    def prune_namespaces(self) -> int:
        """Forget namespaces whose workflows' records have all expired; how many were."""
        horizon = time.time() - self._outcome_ttl
        return int(self._redis.zremrangebyscore(NAMESPACES_KEY, "-inf", horizon))

    def inflight(self, limit: int = 1000) -> list[str]:
        """Ids of workflows not finished yet, soonest deadline first."""
        keys = self._redis.zrange(INFLIGHT_KEY, 0, limit - 1)
        return [_text(key).removeprefix(KEY_PREFIX) for key in cast(list[Any], keys)]

    def _fields(self, workflow_id: str, fields: dict[str, str], keep_state: str = "") -> int:
        return int(self._update(keys=[self.key(workflow_id)], args=[keep_state, *_flatten(fields)]))

    def _hash(self, workflow_id: str) -> dict[str, str]:
        raw = cast(dict[Any, Any], self._redis.hgetall(self.key(workflow_id)))
        return {_text(k): _text(v) for k, v in raw.items()}


class _Script:
    """A Lua script sent whole with EVAL each time.

    EVALSHA saves ~300 bytes a call but meets NOSCRIPT after every Redis restart or failover,
    and fakeredis's TCP server (the demo's embedded Redis) drops the connection on that
    NOSCRIPT when other clients are busy. These scripts are small and called once per state
    change, so plain EVAL is the simpler trade.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._client = client
        self._source = source

    def __call__(
        self,
        keys: Sequence[str],
        args: Sequence[str | int | float],
        client: redis.Redis | Pipeline | None = None,
    ) -> Any:
        """Run the script, or queue it on `client` when that is a pipeline."""
        return (client or self._client).eval(self._source, len(keys), *keys, *args)


class Loaded(NamedTuple):
    """A workflow's record as the tasks read it."""

    status: WorkflowStatus
    request: WorkflowRequest
    trace_carrier: dict[str, str]
    """The submit span's W3C context; {} when the producer was not traced."""


class ParkedCheck(NamedTuple):
    """A parked status check that came due, as `RecordStore.claim_parked` hands it out."""

    workflow_id: str
    due: float
    """When it was due, epoch seconds."""
    epoch: int
    """The workflow's current check loop (the record's `check_epoch`)."""
    finished: bool
    """The workflow has ended, or its record is gone: there is nothing to check."""
    trace_carrier: dict[str, str]


def _loaded(workflow_id: str, raw: dict[str, str]) -> Loaded | None:
    if not raw:
        return None
    return Loaded(
        _status(workflow_id, raw),
        WorkflowRequest.model_validate_json(raw["request"]),
        {name: raw[name] for name in TRACE_FIELDS if raw.get(name)},
    )


def _status(workflow_id: str, raw: dict[str, str]) -> WorkflowStatus:
    outcome = raw.get("outcome")
    deadline = raw.get("deadline")
    return WorkflowStatus(
        workflow_id=workflow_id,
        state=WorkflowState(raw["state"]),
        job_name=raw["job_name"],
        namespace=raw["namespace"],
        submitted_at=datetime.fromisoformat(raw["submitted_at"]),
        updated_at=datetime.fromisoformat(raw["updated_at"]),
        deadline_at=datetime.fromtimestamp(float(deadline), UTC) if deadline else None,
        detail=raw.get("detail", ""),
        cancel_requested=raw.get("cancel_requested") == "1",
        outcome=WorkflowOutcome.model_validate_json(outcome) if outcome else None,
    )


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _carrier(values: Sequence[Any]) -> dict[str, str]:
    """The trace context from the TRACE_FIELDS values of an HMGET (None: not set)."""
    return {name: _text(v) for name, v in zip(TRACE_FIELDS, values, strict=True) if v}


def _trace_fields(carrier: Mapping[str, str] | None) -> dict[str, str]:
    return {name: carrier[name] for name in TRACE_FIELDS if carrier and carrier.get(name)}


def _flatten(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
