"""Whole numbers written as text (message headers, HTTP headers): one rule for reading them,
which never raises on what a sender may write."""

from __future__ import annotations

import re

# SQLite's (and PostgreSQL's bigint) largest integer: bounds for positions and versions.
MAX_SQL_INT = 2**63 - 1
_NUMBER = re.compile(r"-?[0-9]{1,19}")  # the sign, so that "must be ≥ 1" can say so


def plain_number(value: str) -> int | None:
    """`value` as an integer when it is written plainly, ASCII digits with an optional minus
    (not `0_1`, ` 5`, `+5`, `²`, nor thousands of digits) and fits 64 bits; else None."""
    if not _NUMBER.fullmatch(value):
        return None
    number = int(value)
    return number if -MAX_SQL_INT <= number <= MAX_SQL_INT else None
