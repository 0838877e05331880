"""Fast checks (no cluster) that the shipped kwok config and the Python side agree.

A typo in a label key in stages/*.yaml would make a behaviour silently fall back to
"succeed at once"; these tests catch that drift without starting anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .behaviours import (
    BEHAVIOUR_LABEL,
    DURATION_ANNOTATION,
    EXIT_CODE_ANNOTATION,
    START_DELAY_ANNOTATION,
    Behaviour,
    pod_metadata,
)
from .components import STAGES_DIR, Layout, write_kwok_config
from .logs import write_cri_log

_CRI_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z stdout F (.*)$")


def _stages() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(STAGES_DIR.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def test_stage_names_are_unique_and_cover_nodes_and_pods() -> None:
    stages = _stages()
    names = [s["metadata"]["name"] for s in stages]
    kinds = {s["spec"]["resourceRef"]["kind"] for s in stages}

    assert len(names) == len(set(names))
    assert kinds == {"Node", "Pod"}


def test_every_behaviour_and_annotation_is_used_by_a_stage() -> None:
    text = "\n".join(p.read_text() for p in STAGES_DIR.glob("*.yaml"))

    assert f'labels["{BEHAVIOUR_LABEL}"]' in text
    for behaviour in Behaviour:
        if behaviour is not Behaviour.RUN_FOREVER:  # run-forever is the absence of a stage
            assert f"- '{behaviour.value}'" in text, behaviour
    for annotation in (DURATION_ANNOTATION, EXIT_CODE_ANNOTATION, START_DELAY_ANNOTATION):
        assert annotation in text


def test_kwok_config_has_stages_and_catch_all_logs(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    docs = [d for d in yaml.safe_load_all(write_kwok_config(layout).read_text()) if d]

    assert {d["kind"] for d in docs} == {"Stage", "ClusterLogs"}
    (cluster_logs,) = [d for d in docs if d["kind"] == "ClusterLogs"]
    assert cluster_logs["spec"]["logs"] == [{"logsFile": str(layout.default_pod_log)}]


def test_pod_metadata_sets_label_and_only_given_annotations() -> None:
    meta = pod_metadata(Behaviour.FAIL, exit_code=3, duration="2s")

    assert meta == {
        "labels": {BEHAVIOUR_LABEL: "fail"},
        "annotations": {DURATION_ANNOTATION: "2s", EXIT_CODE_ANNOTATION: "3"},
    }
    assert pod_metadata() == {"labels": {}, "annotations": {}}


def test_cri_log_file_has_one_entry_per_line(tmp_path: Path) -> None:
    lines = write_cri_log(tmp_path / "x.log", "a\n\nb c").read_text().splitlines()

    matches = [_CRI_LINE.match(line) for line in lines]
    assert [m.group(1) if m else None for m in matches] == ["a", "", "b c"]
