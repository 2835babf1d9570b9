"""The event store: SQLAlchemy-backed events, snapshots and outbox, plus an in-memory twin."""

from __future__ import annotations

from microservice_connector.eventstore.errors import ConcurrencyError, DatabaseUnavailable
from microservice_connector.eventstore.group_commit import GroupCommitStore
from microservice_connector.eventstore.memory import InMemoryEventStore
from microservice_connector.eventstore.port import AppendRequest, EventStore
from microservice_connector.eventstore.snapshot import (
    InMemorySnapshotStore,
    Snapshot,
    SnapshotStore,
)
from microservice_connector.eventstore.sql import SqlEventStore
from microservice_connector.eventstore.sql_snapshots import SqlSnapshotStore

__all__ = [
    "AppendRequest",
    "ConcurrencyError",
    "DatabaseUnavailable",
    "EventStore",
    "GroupCommitStore",
    "InMemoryEventStore",
    "InMemorySnapshotStore",
    "Snapshot",
    "SnapshotStore",
    "SqlEventStore",
    "SqlSnapshotStore",
]
