"""Session-wide pytest hooks: print the attack table (`tests/attack_harness.py`) after the test summary."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest hook
    """The outcome of every attack row that ran in this session, as one table."""
    harness = sys.modules.get("attack_harness")
    if harness is not None and harness.ROWS:
        terminalreporter.write_sep("=", "attack table (issue 11: attacks from outside the process)")
        terminalreporter.write_line(harness.format_table(harness.ROWS))
