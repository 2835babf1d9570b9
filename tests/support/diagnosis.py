"""What service processes and their database were doing, for the report of a test that timed
out waiting on them: each process's Python stacks (`py-spy dump`, a dev dependency) and the
database's sessions, with their open transactions, lock waits and advisory locks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from support.reliability import Service

PY_SPY = str(Path(sys.executable).with_name("py-spy"))

_SESSIONS = text(
    """
    SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event,
           round(extract(epoch FROM now() - a.xact_start)::numeric, 1) AS open_s,
           (SELECT string_agg(l.locktype || ':' || l.mode || CASE WHEN l.granted THEN ''
                   ELSE ' (waiting)' END, ', ')
              FROM pg_locks l WHERE l.pid = a.pid AND (l.locktype = 'advisory' OR NOT l.granted)
           ) AS advisory_or_waiting,
           left(regexp_replace(a.query, '\\s+', ' ', 'g'), 160) AS query
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
    ORDER BY a.xact_start NULLS LAST
    """
)


def stacks(services: Iterable[Service]) -> str:
    """Every running service's threads as `py-spy dump` shows them (or why it could not)."""
    parts = []
    for service in services:
        if service.process is None or service.process.poll() is not None:
            continue
        pid = service.process.pid
        try:
            dumped = subprocess.run(
                [PY_SPY, "dump", "--pid", str(pid)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            shown = dumped.stdout + dumped.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            shown = f"py-spy failed: {exc}"
        parts.append(f"--- {service.name} on {service.url} (pid {pid})\n{shown}")
    return "\n".join(parts)


def database_sessions(url: str) -> str:
    """One line per session of `url`'s database: state, wait, age of its open transaction,
    its advisory locks and lock waits, and its query."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            rows = connection.execute(_SESSIONS).all()
    except SQLAlchemyError as exc:
        return f"cannot read the sessions: {exc}"
    finally:
        engine.dispose()
    return "\n".join(" | ".join(str(value) for value in row) for row in rows)
