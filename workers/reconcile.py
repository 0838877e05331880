"""The reconciler, run by beat: nothing in flight is forgotten, nothing of ours is left behind.

A status check loop can end without an outcome: its retry could not be published (Redis
failed over), its message was lost, a worker was killed and the message expired. Each check
records when it ran (`last_checked`); a workflow whose checks were silent for
`JOBFERRY_RECONCILE_SILENCE_SECONDS` gets a new check loop under the outcome's task id, with
a higher epoch so the old loop, should it be alive after all, stops at its next run. The
claim is one Lua script per workflow, so two reconcilers never resend the same check twice
in one silence period.

It also lists the Jobs labelled as this installation's (from the watcher's cache when it is
fresh, else one LIST per namespace) and reports those whose workflow record is gone; with
`JOBFERRY_RECONCILE_DELETE_ORPHANS=true` it deletes them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task

from scheduler.celeryconfig import (
    CHECK_TASK,
    LAUNCH_TASK,
    RECONCILE_TASK,
    launch_task_id,
    outcome_task_id,
)
from scheduler.models import WorkflowState
from workers import cache
from workers.app import WorkerContext, app, context
from workers.backends import manifest
from workers.backends.base import BackendError, JobRef

log = logging.getLogger("jobferry")

PAGE = 1000


@app.task(bind=True, name=RECONCILE_TASK)
def reconcile(self: Task[Any, Any]) -> dict[str, list[str]]:
    """Resend silent status checks; report (and optionally delete) Jobs without a record."""
    ctx = context()
    resent = resend_silent_checks(ctx, self.app)
    orphans, deleted = sweep_orphans(ctx)
    ctx.records.prune_namespaces()
    return {"resent": resent, "orphans": orphans, "deleted": deleted}


def resend_silent_checks(ctx: WorkerContext, celery: Any) -> list[str]:
    silence = ctx.settings.reconcile_silence_seconds
    resent: list[str] = []
    for workflow_id in ctx.records.inflight(limit=1_000_000):
        epoch = ctx.records.claim_resend(workflow_id, silence)
        if not epoch:
            continue
        log.warning(
            "workflow %s: no status check for %.0f s; sending a new one (epoch %d)",
            workflow_id,
            silence,
            epoch,
        )
        record = ctx.records.get(workflow_id)
        if record is not None and record.state in (WorkflowState.QUEUED, WorkflowState.LAUNCHING):
            # Never launched, or the launch died half-way: the producer died between writing
            # the record and queueing the launch, the launch message was lost, or Redis failed
            # under a running launch (which then ended without a retry or its chained check).
            # A second launch only adopts the Job the first one may have created.
            log.warning(
                "workflow %s: still %s; sending its launch again", workflow_id, record.state.value
            )
            celery.send_task(
                LAUNCH_TASK,
                args=[workflow_id],
                task_id=launch_task_id(workflow_id),
                ignore_result=True,
            )
        celery.send_task(
            CHECK_TASK,
            args=[workflow_id],
            kwargs={"epoch": epoch},
            task_id=outcome_task_id(workflow_id),
        )
        resent.append(workflow_id)
    return resent


def sweep_orphans(ctx: WorkerContext) -> tuple[list[str], list[str]]:
    """Jobs labelled as ours whose workflow record is gone: `namespace/name` lists."""
    settings = ctx.settings
    selector = manifest.owned_selector(settings.app_label)
    orphans: list[str] = []
    deleted: list[str] = []
    for namespace in settings.watch_namespaces or ctx.records.namespaces():
        try:
            jobs = _owned_jobs(ctx, namespace, selector)
        # One namespace's API trouble must not stop the sweep of the others.
        except BackendError as exc:
            log.warning("reconcile: cannot list Jobs in %s: %s", namespace, exc.message)
            continue
        for name, workflow_id in jobs:
            if workflow_id and ctx.records.get(workflow_id) is not None:
                continue
            where = f"{namespace}/{name}"
            orphans.append(where)
            if not settings.reconcile_delete_orphans:
                log.warning(
                    "reconcile: Job %s (workflow %r) has no workflow record; delete it, or set "
                    "JOBFERRY_RECONCILE_DELETE_ORPHANS=true",
                    where,
                    workflow_id,
                )
                continue
            try:
                ctx.backend.delete(JobRef(name, namespace))
            # Forbidden or unavailable: report it, the next run tries again.
            except BackendError as exc:
                log.warning("reconcile: could not delete orphan Job %s: %s", where, exc.message)
                continue
            log.warning("reconcile: deleted Job %s: no workflow record", where)
            deleted.append(where)
    return orphans, deleted


def _owned_jobs(ctx: WorkerContext, namespace: str, selector: str) -> list[tuple[str, str]]:
    """From the watcher's cache when it is fresh (no API call), else one LIST."""
    client = ctx.records.redis
    if ctx.cache is not None and cache.read_health(client, namespace).ok(
        ctx.settings.watch_stale_seconds
    ):
        stored = client.hgetall(cache.jobs_key(namespace))
        jobs = [json.loads(value) for value in stored.values()]
        return [
            (
                job["metadata"]["name"],
                str((job["metadata"].get("labels") or {}).get(manifest.WORKFLOW_LABEL, "")),
            )
            for job in jobs
        ]
    return ctx.backend.owned_jobs(namespace, selector)
