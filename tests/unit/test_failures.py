"""One classification of database errors: transient, race or permanent."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from microservice_connector.eventstore.failures import Failure, classify


class _PgError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"pg error {sqlstate}")
        self.sqlstate = sqlstate


def _wrapped(kind: type[DBAPIError], code: str | None) -> DBAPIError:
    return kind("INSERT ...", {}, _PgError(code))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("40P01", Failure.RACE),
        ("40001", Failure.RACE),
        ("08006", Failure.TRANSIENT),
        ("53100", Failure.TRANSIENT),
        ("57P01", Failure.TRANSIENT),
        ("22001", Failure.PERMANENT),  # value too long for type character varying(64)
        ("22003", Failure.PERMANENT),  # integer out of range
        ("23502", Failure.PERMANENT),  # not-null violation
        ("42P01", Failure.PERMANENT),  # undefined table
    ],
)
def test_postgres_sqlstates(code: str, expected: Failure) -> None:
    assert classify(_wrapped(DBAPIError, code)) is expected


def test_a_broken_connection_without_sqlstate_is_transient() -> None:
    assert classify(_wrapped(OperationalError, None)) is Failure.TRANSIENT
    assert classify(ConnectionResetError()) is Failure.TRANSIENT


def test_sqlite_errors() -> None:
    locked = OperationalError("x", {}, sqlite3.OperationalError("database is locked"))
    full = OperationalError("x", {}, sqlite3.OperationalError("database or disk is full"))
    unique = IntegrityError("x", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert classify(locked) is Failure.TRANSIENT
    assert classify(full) is Failure.TRANSIENT
    assert classify(unique) is Failure.PERMANENT
    assert classify(OverflowError("Python int too large to convert to SQLite INTEGER")) is (
        Failure.PERMANENT
    )


def test_unknown_errors_are_permanent_so_they_are_bounded() -> None:
    assert classify(ValueError("cannot encode")) is Failure.PERMANENT
