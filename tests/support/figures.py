"""The reliability and scale-out suites' summary rows: kept by the process that ran the test,
carried on its report (`FIGURES_PROPERTY`), and printed by the process that prints the
session's summary, which under pytest-xdist is another one (see `tests/conftest.py`)."""

from __future__ import annotations

HEADER = (
    "| suite | rounds | commands (200) | events | lost | applied twice "
    "| server errors | seconds to recover |"
)
RULE = "|---|---|---|---|---|---|---|---|"
FIGURES_PROPERTY = "reliability-figures"  # the test reports' user property carrying them
REPORTED: list[tuple[str, str]] = []  # (suite, row) reported here, not yet on a test's report
SHOWN: list[tuple[str, str]] = []  # (suite, row) gathered from the session's test reports


def take_reported() -> list[tuple[str, str]]:
    """The (suite, row) of each row reported in this process since the last call."""
    taken = [*REPORTED]
    REPORTED.clear()
    return taken
