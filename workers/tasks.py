"""The three tasks: launch a workflow's Job, check on it until it ends, cancel it.

Each task takes only the workflow id; the request lives in the workflow record, so messages
stay small and no env value is shown in Flower. Every decision is made from the record and
the backend's answer, so a task delivered twice does no harm: the Job name is deterministic
(the second create adopts), and the first outcome stored wins.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from celery import Task, states
from celery.exceptions import Ignore

from scheduler.celeryconfig import CANCEL_TASK, CHECK_TASK, LAUNCH_TASK, outcome_task_id
from scheduler.models import OutcomeState, WorkflowRequest, WorkflowState, WorkflowStatus
from scheduler.records import Loaded
from scheduler.tracing import current_carrier
from workers import outcomes, parking, telemetry
from workers.app import WorkerContext, app, context
from workers.backends.base import (
    JobPhase,
    JobRef,
    JobStatus,
    PermanentError,
    TemporaryError,
)
from workers.cache import NOT_SEEN_YET

log = logging.getLogger("jobferry")

GUARD_JITTER = 0.2
"""The guard loop's interval is shortened by up to this fraction, at random (see _interval)."""

DELETE_FINISH_SECONDS = 60.0
"""How long a Job jobferry is deleting may be missing before a check calls it JobDeleted."""


def backoff(attempt: int, base: float, cap: float, hint: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After hint is a floor."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    return max(delay, hint or 0.0)


# A launch stores no state in the result backend, STARTED or SUCCESS (each is a GET and a SET,
# four round trips per launch). Nobody reads it: the workflow's record says where it is, and a
# redelivered launch finds its Job (409) and adopts it instead of being skipped as done by
# worker_deduplicate_successful_tasks. Its return value still goes to the chained check.
@app.task(bind=True, name=LAUNCH_TASK, max_retries=None, track_started=False, ignore_result=True)
def launch(self: Task[Any, Any], workflow_id: str) -> str:
    """Create the workflow's Job (or adopt it), then hand over to the status check."""
    ctx = context()
    loaded = _unfinished(ctx, workflow_id, launching=True)
    if loaded is None:
        return workflow_id
    record, request, _ = loaded
    if record.state is WorkflowState.QUEUED:
        telemetry.workflow_submitted()
    if record.cancel_requested:
        _finish(
            ctx,
            record,
            request,
            OutcomeState.CANCELLED,
            "Cancelled",
            "cancelled before a Job was created",
        )
        return workflow_id
    if _deadline_passed(record):
        _finish(
            ctx,
            record,
            request,
            OutcomeState.DEADLINE_EXCEEDED,
            "DeadlineExceeded",
            f"the workflow passed its deadline ({request.deadline_seconds} s) before a "
            "worker could launch it; add launch workers or raise deadline_seconds",
        )
        return workflow_id
    if record.state in (WorkflowState.QUEUED, WorkflowState.LAUNCHING):
        # Written by begin_launch already.
        _log_transition(record, WorkflowState.LAUNCHING, f"creating Job {record.job_name}")
    try:
        ref = ctx.backend.create(request, record.job_name, telemetry.trace_env())
    # Retrying cannot fix RBAC, a missing namespace or an invalid manifest: end it now.
    except PermanentError as exc:
        _finish(ctx, record, request, OutcomeState.REJECTED, exc.reason, exc.message)
        return workflow_id
    # The API server is busy or unreachable: back off, within the retry limit.
    except TemporaryError as exc:
        settings = ctx.settings
        if self.request.retries >= settings.api_retry_limit:
            _finish(
                ctx,
                record,
                request,
                OutcomeState.FAILED,
                exc.reason,
                f"gave up creating the Job after {settings.api_retry_limit} retries: {exc.message}",
            )
            return workflow_id
        delay = backoff(
            self.request.retries,
            settings.api_retry_base_seconds,
            settings.api_retry_max_seconds,
            exc.retry_after,
        )
        log.info(
            "workflow %s: create Job %s failed (%s), retry in %.1f s",
            workflow_id,
            record.job_name,
            exc.reason,
            delay,
        )
        _retry(self, ctx, workflow_id, delay, exc)
    verb = "adopted" if ref.adopted else "created"
    detail = f"Job {verb}, waiting for its pod"
    # The watcher may have written the running pod first: that detail stays.
    if not _transition(ctx, record, WorkflowState.RUNNING, detail, keep_if_there=True):
        # Cancelled while we were creating it: do not leave the Job behind.
        ctx.backend.delete(ref)
        return workflow_id
    if record.state is not WorkflowState.RUNNING:
        telemetry.workflow_launched()
    _defer_first_check(self, ctx, record)
    return workflow_id


def _defer_first_check(task: Task[Any, Any], ctx: WorkerContext, record: WorkflowStatus) -> None:
    """Start the chained check loop one interval from now, not at once.

    A first look at a Job created milliseconds ago finds nothing and costs a task, two API
    calls and a requeue per workflow right when a burst of launches needs the CPU and the API
    budget. With the watcher's cache fresh the interval is the long one (the watcher wakes
    the check when the Job ends or its pod gets stuck); without it, `status_interval_seconds`
    (the seed's WaitForCompletion also looks first one poll interval after creating).
    Celery publishes the chain's next step from `request.chain` after this task returns
    (celery/app/trace.py), options included. The long wait is parked instead
    (`workers.parking`): the step leaves the chain, and a worker sends it when it is due.
    """
    chain = task.request.chain
    if not chain:
        return
    step = chain[-1]
    if isinstance(step, dict) and step.get("task") == CHECK_TASK:
        cached = ctx.cache is not None and ctx.cache.fresh(record.namespace)
        countdown = _interval(ctx, 0, record, cached=cached)
        if _parked(ctx, record, countdown, cached):
            # Parked in Redis, and so not published by Celery.
            chain.pop()
        else:
            step.setdefault("options", {})["countdown"] = countdown


def _parked(ctx: WorkerContext, record: WorkflowStatus, countdown: float, cached: bool) -> bool:
    """Park the check's next look when it is watch mode's long wait (`workers.parking`):
    the check read the watcher's fresh cache (`cached`) and waits `PARK_MIN_SECONDS` or more.
    False: it is sent with its countdown instead."""
    due = parking.due_in(countdown) if cached else None
    if due is None:
        return False
    ctx.records.park_check(record.workflow_id, due)
    return True


def _retry(
    task: Task[Any, Any],
    ctx: WorkerContext,
    workflow_id: str,
    countdown: float,
    exc: Exception | None = None,
) -> NoReturn:
    """Come back after `countdown` s; the next attempt's span is a sibling, not a child."""
    with telemetry.under_workflow_trace(_carrier(ctx, workflow_id)):
        if exc is None:
            raise task.retry(countdown=countdown)
        raise task.retry(countdown=countdown) from exc


def _carrier(ctx: WorkerContext, workflow_id: str) -> Mapping[str, str]:
    """The trace context the workflow's next attempt is published under."""
    carrier = telemetry.workflow_carrier()
    return carrier if carrier is not None else ctx.records.trace_carrier(workflow_id)


def _again(
    task: Task[Any, Any],
    ctx: WorkerContext,
    record: WorkflowStatus,
    countdown: float,
    wake: bool,
    exc: Exception | None = None,
    cached: bool = False,
) -> None:
    """Look again later: the regular loop comes back after `countdown` s; a wake-up looks only
    once, so it just ends (None). An API error is a Celery retry, which records the error
    (Flower shows RETRY and the reason); a Job that is simply not done yet is `_requeue`d, or
    parked when it read the watcher's fresh cache (`cached`) and so waits long."""
    if wake:
        return
    if exc is not None:
        _retry(task, ctx, record.workflow_id, countdown, exc)
    if _parked(ctx, record, countdown, cached):
        # This run stores nothing: the run that ends the workflow stores the outcome.
        task.request.ignore_result = True
        return
    _requeue(task, ctx, record.workflow_id, countdown)


def _requeue(task: Task[Any, Any], ctx: WorkerContext, workflow_id: str, countdown: float) -> None:
    """Send this check again, same id and arguments, in `countdown` s; this run stores nothing.

    Not a Celery retry: each retry copies every frame of its traceback (billiard's ExceptionInfo
    keeps a list of each code object's positions), formats it, and stores a RETRY state (a GET
    and a SET). At 5,000 in flight a wave of guard checks grew each worker by ~100 MB that it
    never gave back; sent as below, a wave of 2,500 cost a Celery worker 15 MB instead of
    100 MB. The run that ends the workflow stores the outcome as before.
    """
    request = task.request
    # Built before ignore_result is set below: the next run must store its result.
    again = task.signature_from_request(request, countdown=countdown, retries=request.retries + 1)
    with telemetry.under_workflow_trace(_carrier(ctx, workflow_id)):
        again.apply_async()
    request.ignore_result = True


# No STARTED state either: two Redis round trips (Celery reads the stored state before it
# writes one) for every check, when the workflow's record already says what is happening.
@app.task(bind=True, name=CHECK_TASK, max_retries=None, track_started=False)
def check(
    self: Task[Any, Any], workflow_id: str, epoch: int = 0, wake: bool = False
) -> dict[str, Any] | None:
    """Look at the Job once; end the workflow, or come back after a growing countdown.

    The regular loop runs under the outcome's task id and retries itself. `epoch` is the
    loop's generation: the reconciler starts a new one when a loop went silent, and an older
    loop that turns out to be alive stops at its next run. A `wake` check is sent by the
    watcher when the Job changed: it looks once, never retries, and when it ends the
    workflow it stores the outcome as the outcome task's result too.
    """
    ctx = context()
    telemetry.check_started(self.request.eta)
    if not wake and ctx.records.mark_checked(workflow_id, epoch) == 0:
        log.info("workflow %s: check loop %d was replaced by a newer one", workflow_id, epoch)
        raise Ignore()
    loaded = _unfinished(ctx, workflow_id)
    if loaded is None:
        # A wake-up for a workflow that has ended: the outcome is where it belongs already.
        return None if wake else _stored_outcome(ctx, workflow_id)
    record, request, _ = loaded
    try:
        result = _check_once(self, ctx, record, request, wake)
    # A slow or restarting API server must not end a workflow: look again later.
    except TemporaryError as exc:
        log.info("workflow %s: Job %s unavailable (%s)", workflow_id, record.job_name, exc.reason)
        _again(self, ctx, record, _interval(ctx, self.request.retries, record), wake, exc)
        return None
    if wake and result is not None:
        # The regular loop returns the same outcome at its next run; until then the outcome
        # task's result must already carry it.
        app.backend.store_result(outcome_task_id(workflow_id), result, states.SUCCESS)
    return result


def _check_once(
    task: Task[Any, Any],
    ctx: WorkerContext,
    record: WorkflowStatus,
    request: WorkflowRequest,
    wake: bool,
) -> dict[str, Any] | None:
    ref = JobRef(record.job_name, record.namespace)
    if record.cancel_requested:
        return _cancelled(ctx, record, request)
    if record.state in (WorkflowState.QUEUED, WorkflowState.LAUNCHING):
        if _deadline_passed(record):
            # The launch never got through (a lost message, endless API errors): stop here,
            # deleting whatever Job a half-finished launch may have left.
            return _stop(
                ctx,
                record,
                request,
                ref,
                OutcomeState.DEADLINE_EXCEEDED,
                "DeadlineExceeded",
                f"the workflow passed its deadline ({request.deadline_seconds} s) "
                "before its Job was launched; check the launch workers",
            )
        # The launch is being retried; its countdown decides, ours only waits.
        _again(task, ctx, record, _interval(ctx, task.request.retries, record), wake)
        return None
    try:
        status, cached = _read(ctx, ref, first_look=task.request.retries == 0 and not wake)
    # RBAC or a policy forbids reading the Job: no later check can do better.
    except PermanentError as exc:
        return _stop(ctx, record, request, ref, OutcomeState.REJECTED, exc.reason, exc.message)
    return _judge(task, ctx, record, request, ref, status, cached, wake)


def _read(ctx: WorkerContext, ref: JobRef, first_look: bool) -> tuple[JobStatus, bool]:
    """The Job's status from the watcher's cache when it is fresh, else from the API server.

    Returns the status and whether it came from the cache. A Job the cache saw deleted is
    confirmed with one GET before anyone calls it deleted, and an ended Job whose pods in the
    cache show no exit code yet is read from the API server.
    """
    status = ctx.cache.read(ref, first_look) if ctx.cache is not None else None
    if status is None or status.phase is JobPhase.MISSING:
        return ctx.backend.get(ref), False
    if status.phase.terminal and status.exit_code is None:
        # The pods' watch is a stream apart from the Jobs' and may lag it: take the final
        # evidence (exit code, OOMKilled) from the API server, once per workflow.
        return ctx.backend.get(ref), False
    return status, True


def _judge(
    task: Task[Any, Any],
    ctx: WorkerContext,
    record: WorkflowStatus,
    request: WorkflowRequest,
    ref: JobRef,
    status: JobStatus,
    cached: bool = False,
    wake: bool = False,
) -> dict[str, Any] | None:
    if status.phase is JobPhase.MISSING:
        since = ctx.records.deleting_since(record.workflow_id)
        if since is not None and time.time() - since < DELETE_FINISH_SECONDS:
            # jobferry is deleting it (cancel, deadline, stuck pod): that task stores the
            # outcome; a wake-up caused by its own delete must not call it JobDeleted.
            _again(task, ctx, record, ctx.settings.status_interval_seconds, wake)
            return None
        return _finish(
            ctx,
            record,
            request,
            OutcomeState.FAILED,
            "JobDeleted",
            f"Job {ref.name} was deleted by someone else before it finished; "
            "resubmit under a new workflow id",
            status,
        )
    if status.phase.terminal:
        state = (
            OutcomeState.SUCCEEDED if status.phase is JobPhase.SUCCEEDED else OutcomeState.FAILED
        )
        reason = "Completed" if state is OutcomeState.SUCCEEDED else status.reason
        return _finish(
            ctx,
            record,
            request,
            state,
            reason,
            outcomes.advice(status, request),
            status,
            _logs(ctx, ref, status),
        )
    if status.stuck and _waited(status) >= ctx.settings.startup_grace_seconds:
        return _stop(
            ctx,
            record,
            request,
            ref,
            OutcomeState.FAILED,
            status.reason,
            outcomes.advice(status, request),
            status,
        )
    if _deadline_passed(record):
        return _stop(
            ctx,
            record,
            request,
            ref,
            OutcomeState.DEADLINE_EXCEEDED,
            "DeadlineExceeded",
            f"the workflow passed its deadline ({request.deadline_seconds} s); the Job "
            "and its pods were deleted. Raise deadline_seconds or make the work faster",
            status,
        )
    if status is not NOT_SEEN_YET:
        detail = outcomes.live_detail(status)
        if detail != record.detail:
            _transition(ctx, record, WorkflowState.RUNNING, detail)
    countdown = _interval(ctx, task.request.retries, record, status, cached)
    _again(task, ctx, record, countdown, wake, cached=cached)
    if status.stuck:
        # The regular loop may be far off: come back when the start-up grace ends.
        task.app.send_task(
            CHECK_TASK,
            args=[record.workflow_id],
            kwargs={"wake": True},
            task_id=f"jobferry-wake-{record.workflow_id}-grace-{uuid.uuid4().hex[:12]}",
            countdown=countdown,
            ignore_result=True,
        )
    return None


@app.task(bind=True, name=CANCEL_TASK, max_retries=None)
def cancel(self: Task[Any, Any], workflow_id: str) -> dict[str, Any] | None:
    """Delete the Job now and store the `cancelled` outcome (the status check then returns it)."""
    ctx = context()
    loaded = _unfinished(ctx, workflow_id)
    if loaded is None:
        return _stored_outcome(ctx, workflow_id)
    record, request, _ = loaded
    try:
        return _cancelled(ctx, record, request)
    # The API server is unavailable: the delete must still happen, so try again.
    except TemporaryError as exc:
        raise self.retry(countdown=backoff(self.request.retries, 1.0, 30.0)) from exc


def _cancelled(
    ctx: WorkerContext, record: WorkflowStatus, request: WorkflowRequest
) -> dict[str, Any]:
    ref = JobRef(record.job_name, record.namespace)
    return _stop(
        ctx,
        record,
        request,
        ref,
        OutcomeState.CANCELLED,
        "Cancelled",
        "cancelled by request; the Job and its pods were deleted",
    )


def _unfinished(ctx: WorkerContext, workflow_id: str, launching: bool = False) -> Loaded | None:
    """The record of a workflow still to be worked on (one read); None when it has ended.

    With `launching`, the same round trip moves a queued workflow to `launching`, and a
    workflow from an untraced producer (its record has no trace context) takes the launch
    span's: it becomes the checks' root. The launch's own retries need nothing: published from
    inside the launch span, they are its children anyway.
    """
    if launching:
        loaded = ctx.records.begin_launch(workflow_id, current_carrier())
    else:
        loaded = ctx.records.load(workflow_id)
    if loaded is None or loaded.status.outcome is not None:
        return None
    telemetry.enter_workflow(loaded.status, loaded.request, loaded.trace_carrier)
    return loaded


def _stored_outcome(ctx: WorkerContext, workflow_id: str) -> dict[str, Any] | None:
    record = ctx.records.get(workflow_id)
    if record is None or record.outcome is None:
        return None
    return record.outcome.model_dump(mode="json")


def _stop(
    ctx: WorkerContext,
    record: WorkflowStatus,
    request: WorkflowRequest,
    ref: JobRef,
    state: OutcomeState,
    reason: str,
    message: str,
    status: JobStatus | None = None,
) -> dict[str, Any]:
    """Capture the evidence, delete the Job (pods included), and store the outcome."""
    if status is None:
        try:
            status = ctx.backend.get(ref)
        # Evidence is best effort; the delete below is what matters.
        except (TemporaryError, PermanentError):
            status = None
    log_tail = _logs(ctx, ref, status) if status is not None else ""
    if status is None or status.phase is not JobPhase.MISSING:
        ctx.records.mark_deleting(record.workflow_id)
        try:
            ctx.backend.delete(ref)
        # Forbidden to delete: the outcome must say the Job is still there, and why.
        except PermanentError as exc:
            message += f"; the Job could NOT be deleted ({exc.reason}): {exc.message}"
    return _finish(ctx, record, request, state, reason, message, status, log_tail)


def _finish(
    ctx: WorkerContext,
    record: WorkflowStatus,
    request: WorkflowRequest,
    state: OutcomeState,
    reason: str,
    message: str,
    status: JobStatus | None = None,
    log_tail: str = "",
) -> dict[str, Any]:
    outcome = outcomes.build(
        record, state, reason, message, status, log_tail, request.secret_values()
    )
    stored = ctx.records.finish(outcome)
    telemetry.workflow_finished(outcome, stored)
    log.info(
        "workflow %s finished: %s (%s), Job %s",
        record.workflow_id,
        stored.state.value,
        stored.reason,
        record.job_name,
        extra={
            "workflow_id": record.workflow_id,
            "job_name": record.job_name,
            "state": "finished",
            "outcome": stored.state.value,
            "reason": stored.reason,
        },
    )
    return stored.model_dump(mode="json")


def _transition(
    ctx: WorkerContext,
    record: WorkflowStatus,
    state: WorkflowState,
    detail: str,
    keep_if_there: bool = False,
) -> bool:
    changed = ctx.records.set_state(record.workflow_id, state, detail, keep_if_there=keep_if_there)
    if changed:
        _log_transition(record, state, detail)
    return changed


def _log_transition(record: WorkflowStatus, state: WorkflowState, detail: str) -> None:
    log.info(
        "workflow %s: %s (%s), Job %s",
        record.workflow_id,
        state.value,
        detail,
        record.job_name,
        extra={
            "workflow_id": record.workflow_id,
            "job_name": record.job_name,
            "state": state.value,
            "detail": detail,
        },
    )


def _logs(ctx: WorkerContext, ref: JobRef, status: JobStatus) -> str:
    settings = ctx.settings
    try:
        return ctx.backend.logs(ref, status, settings.log_tail_lines, settings.log_tail_bytes)
    # The log is evidence; an outcome without it is better than none.
    except (TemporaryError, PermanentError) as exc:
        return f"[log unavailable: {exc.reason}]"


def _deadline_passed(record: WorkflowStatus) -> bool:
    return record.deadline_at is not None and datetime.now(UTC) >= record.deadline_at


def _waited(status: JobStatus) -> float:
    if status.waiting_since is None:
        return float("inf") if status.waiting_reason == "InvalidImageName" else 0.0
    return (datetime.now(UTC) - status.waiting_since).total_seconds()


def _interval(
    ctx: WorkerContext,
    checks: int,
    record: WorkflowStatus,
    status: JobStatus | None = None,
    cached: bool = False,
) -> float:
    """Short at first, growing 1.5x to the cap; never past the deadline or the start-up grace.

    While the watcher's cache is fresh (`cached`) it is `watch_check_interval_seconds` from the
    start: the watcher wakes the check when the Job or its pod changes, and the regular loop
    only guards the deadline and a lost wake-up. (Growing from 2 s instead, 1,000 Jobs in
    flight cost ~130 checks/s in their first minute, CPU the launches needed.) It is jittered,
    as client-go jitters its resyncs: a burst of launches would otherwise come back as a burst
    of guard checks one interval later, and Jobs as long as the interval end in that burst.
    Shortened only, so that the settings' rules about the longest interval still hold.
    """
    settings = ctx.settings
    if cached:
        interval = max(settings.status_interval_max_seconds, settings.watch_check_interval_seconds)
        interval *= random.uniform(1 - GUARD_JITTER, 1.0)
    else:
        interval = min(
            settings.status_interval_max_seconds,
            settings.status_interval_seconds * 1.5 ** min(checks, 40),
        )
    if record.deadline_at is not None:
        remaining = (record.deadline_at - datetime.now(UTC)).total_seconds()
        interval = min(interval, max(0.5, remaining + 0.1))
    if status is not None and status.stuck:
        remaining = settings.startup_grace_seconds - _waited(status)
        interval = min(interval, max(0.5, remaining + 0.1))
    return interval
