"""The README is the front door: its configuration table and commands must stay true."""

from __future__ import annotations

import re

from scheduler.settings import reference_table
from tests.services import ROOT

README = (ROOT / "README.md").read_text()


def test_configuration_table_matches_the_settings() -> None:
    section = re.search(
        r"<!-- settings-table:start.*?-->\n(.*?)\n<!-- settings-table:end -->", README, re.S
    )
    assert section is not None, "the README lost its settings table markers"
    assert section.group(1) == reference_table(), "run `jobferry config --reference`"


def test_exactly_two_setup_commands() -> None:
    block = re.search(r"## Set up on a fresh machine.*?```sh\n(.*?)```", README, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
