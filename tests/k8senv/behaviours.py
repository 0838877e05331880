"""How a test tells kwok what a pod should do: one label and a few annotations.

The keys are read by the kwok stages in `stages/*.yaml` and by the log binder. Put them on
a Job's pod template (`spec.template.metadata`) - a workflow request that can set pod
labels/annotations can thus pick its fate. `pod_metadata()` builds them.

Without the label a Job's pod succeeds at once (exit 0), like kwok's default stages.
"""

from __future__ import annotations

from enum import Enum

BEHAVIOUR_LABEL = "jobferry.test/behaviour"
DURATION_ANNOTATION = "jobferry.test/duration"
"""Go duration ("3s", "500ms") the container runs before it ends. Default 0."""
EXIT_CODE_ANNOTATION = "jobferry.test/exit-code"
"""Exit code of a `fail` container. Default 1."""
MESSAGE_ANNOTATION = "jobferry.test/message"
"""Termination message of a `fail`/`oom` container. Optional."""
START_DELAY_ANNOTATION = "jobferry.test/start-delay"
"""How long a `slow-start` pod stays Pending (ContainerCreating). Default 5s."""
LOG_ANNOTATION = "jobferry.test/log"
"""Text that `pods/log` returns for every container of the pod."""
LOG_FILE_ANNOTATION = "jobferry.test/log-file"
"""Absolute path of a CRI-format log file (see logs.write_cri_log) that `pods/log` serves."""


class Behaviour(str, Enum):
    """Values of the BEHAVIOUR_LABEL label."""

    SUCCEED = "succeed"
    """Running, then Succeeded (exit 0) after the duration. Also for pods no Job owns."""
    FAIL = "fail"
    """Running, then Failed with the exit code after the duration."""
    OOM = "oom"
    """Running, then Failed: reason OOMKilled, exit code 137, after the duration."""
    IMAGEPULL = "imagepull"
    """Pending forever, containers waiting with reason ImagePullBackOff."""
    SLOW_START = "slow-start"
    """Pending (ContainerCreating) for the start delay, then Running, then Succeeded."""
    RUN_FOREVER = "run-forever"
    """Running, never finishes (for activeDeadlineSeconds and cancellation tests)."""


def pod_metadata(
    behaviour: Behaviour | None = None,
    *,
    duration: str | None = None,
    exit_code: int | None = None,
    message: str | None = None,
    start_delay: str | None = None,
    log: str | None = None,
) -> dict[str, dict[str, str]]:
    """`{"labels": ..., "annotations": ...}` for a pod template selecting a behaviour."""
    labels = {BEHAVIOUR_LABEL: behaviour.value} if behaviour else {}
    values = {
        DURATION_ANNOTATION: duration,
        EXIT_CODE_ANNOTATION: None if exit_code is None else str(exit_code),
        MESSAGE_ANNOTATION: message,
        START_DELAY_ANNOTATION: start_delay,
        LOG_ANNOTATION: log,
    }
    annotations = {k: v for k, v in values.items() if v is not None}
    return {"labels": labels, "annotations": annotations}
