"""What a database failure means for billing's callers, decided once (`eventstore.failures`)
for the unit of work and the reads alike."""

from __future__ import annotations

import sqlite3

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.billing_service.application.ports import ConcurrentBillUpdate
from microservice_connector.eventstore.engine import describe, describe_failure
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.failures import (
    DataRejected,
    Failure,
    classify,
    is_unique_violation,
)


def billing_failure(
    engine: Engine, exc: SQLAlchemyError | sqlite3.Error | OverflowError
) -> Exception:
    """The billing error for `exc`: `ConcurrentBillUpdate` for a race lost to another
    instance (a row written meanwhile, a deadlock), `DatabaseUnavailable` for what may heal
    by itself, `DataRejected` for data the database refuses (retrying cannot help)."""
    failure = classify(exc)
    if failure is Failure.RACE or is_unique_violation(exc):
        return ConcurrentBillUpdate(describe_failure(engine, exc))
    if failure is Failure.TRANSIENT:
        return DatabaseUnavailable(describe_failure(engine, exc))
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return DataRejected(f"database {describe(engine)} refused billing's write: {reason}")
