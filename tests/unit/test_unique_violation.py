"""A duplicate key is told apart from the other integrity errors, on both databases."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError

from microservice_connector.eventstore.failures import Failure, classify, is_unique_violation


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"pg error {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("orig", "duplicate"),
    [
        (_PgError("23505"), True),
        (_PgError("23502"), False),  # not null
        (_PgError("23514"), False),  # check
        (sqlite3.IntegrityError("UNIQUE constraint failed: bills.cart_id"), True),
        (sqlite3.IntegrityError("NOT NULL constraint failed: bills.lines"), False),
    ],
)
def test_only_a_duplicate_key_is_a_unique_violation(orig: Exception, duplicate: bool) -> None:
    error = IntegrityError("INSERT ...", {}, orig)
    assert is_unique_violation(error) is duplicate
    assert classify(error) is Failure.PERMANENT  # a race only for whoever says so
