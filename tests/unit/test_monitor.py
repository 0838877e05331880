"""`jobferry flower` builds Flower's options only with credentials, or an explicit --no-auth;
workers send task events only when asked to (by Flower, or `JOBFERRY_TASK_EVENTS`)."""

from __future__ import annotations

import pytest

from scheduler.celeryconfig import celery_config
from scheduler.errors import RequestError
from scheduler.settings import load_settings
from workers.monitor import flower_argv


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "Flower needs authentication: set FLOWER_BASIC_AUTH=user:password"),
        ("admin", "entry 1 is not user:password"),
        ("admin:", "entry 1 is not user:password"),
        (":Secret9", "entry 1 is not user:password"),
        ("a:Secret9,b", "entry 2 is not user:password"),
    ],
)
def test_bad_or_missing_credentials(value: str, expected: str) -> None:
    with pytest.raises(RequestError) as caught:
        flower_argv({"FLOWER_BASIC_AUTH": value}, port=5555, address="127.0.0.1", no_auth=False)
    assert expected in str(caught.value)
    assert "Secret9" not in str(caught.value)


def test_credentials_or_no_auth_start_flower_with_events() -> None:
    env = {"FLOWER_BASIC_AUTH": "a:Secret9,b:pw"}
    argv = flower_argv(env, port=5600, address="0.0.0.0", no_auth=False)
    assert argv == ["--port=5600", "--address=0.0.0.0", "--enable_events=True"]
    assert flower_argv({}, port=5555, address="127.0.0.1", no_auth=True)[0] == "--port=5555"
    assert not any("Secret9" in arg for arg in argv)


@pytest.mark.parametrize(("value", "sent"), [(None, False), ("true", True), ("false", False)])
def test_task_events_wait_for_a_monitor_unless_asked_for(
    value: str | None, sent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOBFERRY_TASK_EVENTS", raising=False)
    if value is not None:
        monkeypatch.setenv("JOBFERRY_TASK_EVENTS", value)
    assert celery_config(load_settings())["worker_send_task_events"] is sent
