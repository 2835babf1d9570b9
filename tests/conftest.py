"""Fixtures shared by every suite: a real PostgreSQL server and a fresh schema per test; and
the reliability and scale-out suites' summary tables at the end of the session."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.eventstore import SqlEventStore
from microservice_connector.settings import Settings
from support import postgres
from support.figures import FIGURES_PROPERTY, HEADER, RULE, SHOWN, take_reported
from support.nats import NatsServer
from support.tansu import TansuServer, tansu_or_skip

# A shell without job control starts background commands with Ctrl-C's SIGINT ignored, and
# processes inherit that: `msc up` started by a test would then ignore the SIGINT the test
# sends it, as a user's Ctrl-C. The suite's processes take SIGINT as at a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A reachable PostgreSQL database for the whole session (under pytest-xdist, one of this
    worker's own on the server); fails (never skips) without one."""
    failure = None
    try:
        with postgres.server_url() as server, postgres.worker_database(server) as url:
            yield url
    except postgres.PostgresUnavailable as exc:
        failure = str(exc)
    if failure is not None:  # outside the handler, so the report shows the reason once
        pytest.fail(failure, pytrace=False)


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema, dropped after the test.

    Dispose of engines made from it (close stores) before the test ends.
    """
    with postgres.fresh_schema(postgres_server_url) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_event_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlEventStore]:
    """A cart event store (events and its `cart.events` outbox) on SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = SqlEventStore(url)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def billing_repository(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqlBillingRepository]:
    """Billing's database, as the service opens it, on SQLite, then PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened = open_billing_repository(Settings(data_dir=tmp_path, billing_database_url=url))
    yield opened
    opened.close()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on a free 127.0.0.1 port, its store under
    `tmp_path`; stopped after the test."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def tansu_server(tmp_path: Path) -> Iterator[TansuServer]:
    """A real Tansu (Kafka-compatible, memory-only) broker on a free 127.0.0.1 port, stopped
    after the test; skips where no Tansu build exists for the platform."""
    tansu_or_skip()
    with TansuServer(tmp_path / "tansu") as server:
        yield server


SCALE_PREFIX = "scale:"  # the scale-out suites' rows, shown in a table of their own too


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Carry the figures a test reported on its teardown report, which pytest-xdist sends
    from the worker that ran the test to the process that prints the summary."""
    outcome: Any = yield
    made = outcome.get_result()
    if made.when == "teardown":
        made.user_properties.extend((FIGURES_PROPERTY, row) for row in take_reported())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the figures carried by a test's report for the summary."""
    SHOWN.extend(tuple(value) for name, value in report.user_properties if name == FIGURES_PROPERTY)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the scale-out suites' figures, then every suite's (unless all were scale-out's),
    as Markdown tables."""
    SHOWN.extend(take_reported())  # rows of a test cut short (Ctrl-C) before its teardown
    scale = [row for suite, row in SHOWN if suite.startswith(SCALE_PREFIX)]
    every = [row for _, row in SHOWN]
    tables = [("scale-out figures", scale)]
    if len(every) > len(scale):
        tables.append(("reliability figures", every))
    for title, rows in tables:
        if rows:
            terminalreporter.section(title)
            terminalreporter.write_line(HEADER)
            terminalreporter.write_line(RULE)
            for row in rows:
                terminalreporter.write_line(row)
