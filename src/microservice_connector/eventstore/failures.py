"""Database failures, classified once for every store: transient (retry, it may heal) or
permanent (the data itself was refused: retrying cannot help)."""

from __future__ import annotations

import enum
import sqlite3

from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

# deadlock_detected, serialization_failure: the transaction lost a race and wrote nothing.
RACE_SQLSTATES = frozenset({"40P01", "40001"})
# SQLSTATE classes that may heal by themselves: connection (08), resources such as a full
# disk (53), operator intervention such as a shutdown (57), lock not available (55P03).
_TRANSIENT_CLASSES = frozenset({"08", "53", "57", "58"})
_TRANSIENT_SQLSTATES = RACE_SQLSTATES | {"55P03", "55006"}
# Data exception (22: a value too long or out of range), integrity constraint (23),
# syntax or access rule (42): the same statement fails the same way every time.
_PERMANENT_CLASSES = frozenset({"22", "23", "42"})
# SQLite's own words for conditions that pass: another writer, a busy or full disk.
_SQLITE_TRANSIENT = ("locked", "busy", "disk i/o", "unable to open", "database or disk is full")


class Failure(enum.Enum):
    """What a database error means for whoever retries it."""

    TRANSIENT = "transient"  # retry without counting it as a failure
    RACE = "race"  # a concurrent transaction won: re-read and run again
    PERMANENT = "permanent"  # the data was refused: bounded attempts, then dead-letter or 4xx


class DataRejected(Exception):
    """The database refused the data itself (a value that does not fit, a constraint that is
    not a race): the same write fails the same way every time, so it must not be retried."""


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE behind `exc`, if any."""
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def classify(exc: BaseException) -> Failure:
    """Classify any error raised while talking to a database; unknown errors are permanent,
    so that they are counted and bounded instead of retried forever."""
    code = sqlstate(exc)
    if code is not None:
        if code in RACE_SQLSTATES:
            return Failure.RACE
        if code in _TRANSIENT_SQLSTATES or code[:2] in _TRANSIENT_CLASSES:
            return Failure.TRANSIENT
        if code[:2] in _PERMANENT_CLASSES:
            return Failure.PERMANENT
    orig = getattr(exc, "orig", None) or exc
    if isinstance(exc, DisconnectionError | PoolTimeout):
        return Failure.TRANSIENT
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Failure.TRANSIENT
    if isinstance(orig, sqlite3.IntegrityError | sqlite3.DataError | OverflowError):
        return Failure.PERMANENT
    if isinstance(orig, sqlite3.OperationalError):
        message = str(orig).lower()
        if any(words in message for words in _SQLITE_TRANSIENT):
            return Failure.TRANSIENT
        return Failure.PERMANENT
    if isinstance(orig, ConnectionError | TimeoutError | OSError):
        return Failure.TRANSIENT
    if code is None and _is_operational(exc):
        return Failure.TRANSIENT
    return Failure.PERMANENT


def _is_operational(exc: BaseException) -> bool:
    """A driver-level operational error with no SQLSTATE: a connection that broke or never
    opened (psycopg raises these with sqlstate None)."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        not isinstance(exc, SQLAlchemyError) and type(exc).__name__ in {"OperationalError"}
    )


def is_unique_violation(exc: BaseException) -> bool:
    """Whether `exc` is a duplicate key: for a writer that inserts only keys it has just
    read as absent, another transaction won the race (class 23 is otherwise permanent)."""
    if sqlstate(exc) == "23505":
        return True
    orig = getattr(exc, "orig", None) or exc
    return isinstance(orig, sqlite3.IntegrityError) and "UNIQUE constraint failed" in str(orig)
