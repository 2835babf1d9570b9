"""The reliability suites print one summary table at the end of the session."""

from __future__ import annotations

from typing import Any

from support.reliability import HEADER, REPORTED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print every suite's figures as one Markdown table."""
    if not REPORTED:
        return
    terminalreporter.section("reliability figures")
    terminalreporter.write_line(HEADER)
    terminalreporter.write_line("|---|---|---|---|---|---|---|---|")
    for figures in REPORTED:
        terminalreporter.write_line(figures.row())
