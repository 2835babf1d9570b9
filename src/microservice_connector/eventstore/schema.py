"""The tables of DESIGN §3.2: events (the original schema, extended), snapshots, outbox.

Columns added later are nullable, so `engine.create_schema` can add them to older databases;
columns widened later (ids that carry a prefix) are widened there too.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from microservice_connector.events.ids import STORED_ID_LENGTH

metadata = MetaData()

# `events.version` is an Integer: PostgreSQL's holds no more (SQLite's would).
MAX_VERSION = 2**31 - 1
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
_Id = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("aggregate_id", String(STORED_ID_LENGTH), nullable=False),
    Column("aggregate_type", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("event_data", LargeBinary, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    UniqueConstraint("aggregate_id", "version", name="uq_events_aggregate_version"),
    Index("idx_events_aggregate_id", "aggregate_id"),
    Index("idx_events_timestamp", "timestamp"),
    sqlite_autoincrement=True,
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("aggregate_id", String(STORED_ID_LENGTH), primary_key=True),
    Column("aggregate_type", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("headers", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    # The relay holding the row's lease (PostgreSQL, several relays), and until when; the
    # last holder stays recorded once the row is published.
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    # Where the broker stored the message (JetStream stream sequence, Kafka offset).
    Column("broker_sequence", BigInteger, nullable=True),
    Index(
        "idx_outbox_pending",
        "id",
        sqlite_where=Column("published_at").is_(None),
        postgresql_where=Column("published_at").is_(None),
    ),
    sqlite_autoincrement=True,
)
