"""The scale-out suites print their summary table at the end of the session."""

from __future__ import annotations

from typing import Any

from support.reliability import HEADER, REPORTED

SUITE_PREFIX = "scale:"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the scale-out suites' figures as one Markdown table."""
    rows = [figures.row() for figures in REPORTED if figures.suite.startswith(SUITE_PREFIX)]
    if not rows:
        return
    terminalreporter.section("scale-out figures")
    terminalreporter.write_line(HEADER)
    terminalreporter.write_line("|---|---|---|---|---|---|---|---|")
    for row in rows:
        terminalreporter.write_line(row)
