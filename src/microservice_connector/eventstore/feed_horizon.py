"""PostgreSQL's safe horizon for the global feed: writers commit side by side, and a reader is
shown an event only once no event at an earlier position can still commit.

Positions come from a sequence, so a transaction may commit after another that took later
positions; a reader paging by position would skip its events for good. So positions are
handed out by `msc_take_positions`, which marks the transaction as in flight from its first
position on: a transaction-scoped shared advisory lock whose key is that position (offset
into a range of its own), held until the transaction ends. `msc_feed_end` answers the first
position a reader may not show yet: the lowest position still in flight, or past the newest
position handed out. Both run in a short critical section (a session advisory lock held for
one function call, never through a commit), so a reader sees every allocation either as done
or as in flight. The reader's next statement, whose snapshot is taken after that answer, then
sees every event below it that will ever commit.

Only transactions that take positions of this store hold its feed back, and only until they
end; other transactions, and other stores' (in other schemas of the same database), do not: a
horizon from `pg_snapshot_xmin` would wait for every writing transaction of the whole cluster.
Each store's keys lie in a range of its own, chosen by its sequence's object id. Two stores
whose ids fall in one range (a multiple of 2**21 apart) hold each other's feeds back, as all
stores of a database did before: for as long as the other has appends in flight, never a
skip; `install` warns of it. The reader must run at READ COMMITTED (each statement a new
snapshot), or its page could be read in a snapshot older than the horizon's answer.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# Advisory keys, the same for every event store writing to one PostgreSQL database. A store's
# slot is its sequence's object id modulo 2**21; it names the store's critical section (a
# lock of two 32-bit keys, never counted as in flight) and its range of 2**40 in-flight keys
# from _IN_FLIGHT_KEYS + slot * 2**40, all of them below 2**63 and apart from the project's
# other keys.
_SECTION_CLASS = 0x6D73_6664  # "msfd"
_SLOTS = 2**21
_SLOT_SIZE = 2**40
_IN_FLIGHT_KEYS = 2**62
_SEQUENCE = "pg_get_serial_sequence('events', 'id')::regclass"


def _slot_of(sequence: str) -> str:
    """SQL for the slot of the store whose position sequence is `sequence` (its object id)."""
    return f"mod({sequence}::oid::bigint, {_SLOTS})"


_DECLARE_SLOT = f"""
    position_sequence regclass := {_SEQUENCE};
    slot bigint := {_slot_of("position_sequence")};
    first_key bigint := {_IN_FLIGHT_KEYS} + slot * {_SLOT_SIZE};"""
_LEAVE_ON_ERROR = f"""
    EXCEPTION WHEN others OR query_canceled THEN
        -- A session lock outlives the transaction: release it on every way out.
        PERFORM pg_advisory_unlock({_SECTION_CLASS}, slot::integer);
        RAISE;
    END;
    PERFORM pg_advisory_unlock({_SECTION_CLASS}, slot::integer);"""

_INSTALL = [
    f"""
CREATE OR REPLACE FUNCTION msc_take_positions(how_many integer) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE{_DECLARE_SLOT}
    first_position bigint;
BEGIN
    PERFORM pg_advisory_lock({_SECTION_CLASS}, slot::integer);
    BEGIN
        first_position := nextval(position_sequence);
        PERFORM pg_advisory_xact_lock_shared(first_key + first_position);
        RETURN NEXT first_position;
        RETURN QUERY SELECT nextval(position_sequence) FROM generate_series(2, how_many);
    {_LEAVE_ON_ERROR}
END
$$
""",
    f"""
CREATE OR REPLACE FUNCTION msc_feed_end() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE{_DECLARE_SLOT}
    newest bigint;
    oldest_in_flight bigint;
BEGIN
    PERFORM pg_advisory_lock({_SECTION_CLASS}, slot::integer);
    BEGIN
        newest := coalesce(pg_sequence_last_value(position_sequence), 0);
        SELECT min(key) - first_key INTO oldest_in_flight
        FROM (
            SELECT (classid::bigint << 32) | objid::bigint AS key
            FROM pg_locks
            WHERE locktype = 'advisory' AND objsubid = 1 AND granted
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        ) AS held
        WHERE key >= first_key AND key < first_key + {_SLOT_SIZE};
    {_LEAVE_ON_ERROR}
    RETURN least(newest + 1, oldest_in_flight);
END
$$
""",
]

# Other stores of the database whose `events` sequence falls in this store's slot.
_SHARING_THE_SLOT = text(
    f"""
SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND c.relname = 'events_id_seq'
  AND c.oid <> {_SEQUENCE} AND {_slot_of("c.oid")} = {_slot_of(_SEQUENCE)}
ORDER BY n.nspname"""
)

SLOT = text(f"SELECT {_slot_of(_SEQUENCE)}")
"""The slot of the store in the connection's schema: its critical section's second key."""

TAKE_POSITIONS = text("SELECT msc_take_positions(:count)")
"""The next `:count` positions, in order; they hold the feed back until the transaction ends."""

FEED_END = text("SELECT msc_feed_end()")
"""The first position a reader may not show yet; a later statement sees all committed below."""


def install(engine: Engine) -> None:
    """Create (or replace) the two functions; one instance at a time, so instances may start
    together. Warns if another store of the database shares this one's keys.
    `DatabaseUnavailable` if the database is not there."""
    try:
        with engine.begin() as connection:
            engines.take_schema_turn(connection)
            for statement in _INSTALL:
                connection.exec_driver_sql(statement)
            sharing = list(connection.execute(_SHARING_THE_SLOT).scalars())
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(engines.describe_failure(engine, exc)) from exc
    if sharing:
        log.warning(
            "%s: the event store in schema %s marks its writes in flight under the same keys"
            " as this one, so each one's open appends hold back the other's feed (a delay,"
            " never a skip); move one of them to another database to end it",
            engines.describe(engine),
            ", ".join(sharing),
        )
