"""Builds SQLAlchemy engines: SQLite in WAL mode with a busy timeout, or PostgreSQL by URL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.schema import metadata
from microservice_connector.eventstore.schema_upgrade import add_missing_columns, widen_columns

SqliteSynchronous = Literal["FULL", "NORMAL", "OFF"]
BUSY_TIMEOUT_MS = 10_000
log = logging.getLogger(__name__)
# Any fixed 64-bit number; instances creating one PostgreSQL schema at once take turns on it.
_SCHEMA_LOCK_KEY = 0x6D73_635F_7363_686D  # "msc_schm"
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def parse_database_url(url: str) -> URL:
    """Parse and normalise a database URL; `DatabaseUnavailable` says what is wrong with it."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: e.g. a port that is no number
        raise DatabaseUnavailable(
            "not a database URL (expected sqlite:///PATH or postgresql://...)"
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseUnavailable(
            f"unsupported database {backend!r} in {shown}: use sqlite:///PATH or postgresql://..."
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise DatabaseUnavailable(
            f"{shown}: give SQLite a file path, e.g. sqlite:///data/events.db"
        )
    return parsed


def make_engine(
    url: str,
    *,
    writer: bool = False,
    sqlite_synchronous: SqliteSynchronous = "FULL",
    pool_size: int = 8,
) -> Engine:
    """An engine for `url`; a `writer` SQLite engine takes the write lock when it begins."""
    parsed = parse_database_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed, writer=writer, synchronous=sqlite_synchronous)
        return create_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
        )
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseUnavailable(f"no driver for {parsed.drivername}: {exc}") from exc


def _sqlite_engine(url: URL, *, writer: bool, synchronous: SqliteSynchronous) -> Engine:
    path = Path(url.database or "")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create folder for SQLite file {path}: {exc}") from exc
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        pool_size=1 if writer else 8,
        max_overflow=0 if writer else 8,
    )
    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Driver-level autocommit, so that SQLAlchemy's "begin" below decides how we lock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


def connections_in_use(engine: Engine) -> int:
    """How many of `engine`'s pooled connections are checked out now (0 if its pool does not
    count them)."""
    count = getattr(engine.pool, "checkedout", None)
    return int(count()) if callable(count) else 0


def create_schema(engine: Engine, tables: MetaData = metadata) -> None:
    """Create missing tables and indexes, add missing nullable columns and widen narrower
    ones, logging what changed; on PostgreSQL one instance at a time, so instances may
    start together.
    `DatabaseUnavailable` if the database is not there."""
    try:
        with engine.begin() as connection:
            take_schema_turn(connection)
            tables.create_all(connection)
            added = add_missing_columns(connection, tables) + widen_columns(connection, tables)
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(describe_failure(engine, exc)) from exc
    if added:
        log.warning("%s: added or widened columns %s", describe(engine), ", ".join(added))


def take_schema_turn(connection: Connection) -> None:
    """On PostgreSQL, wait until no other instance changes the schema, until this transaction
    ends; SQLite's write lock already does that."""
    if connection.dialect.name == "postgresql":
        connection.execute(_ADVISORY_LOCK, {"key": _SCHEMA_LOCK_KEY})


def describe(engine: Engine) -> str:
    """The engine's URL, password hidden."""
    return engine.url.render_as_string(hide_password=True)


def ping(engine: Engine) -> None:
    """Run `SELECT 1`; raise `DatabaseUnavailable` with the reason if it fails."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(describe_failure(engine, exc)) from exc


def describe_failure(engine: Engine, exc: BaseException) -> str:
    """A one-line reason naming the database (without its password)."""
    return f"database {describe(engine)} unavailable: {_reason(exc)}"


def describe_refusal(engine: Engine, exc: BaseException) -> str:
    """A one-line reason naming the database that refused the data (without its password)."""
    return f"database {describe(engine)} refused the data: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
