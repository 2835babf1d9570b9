"""The outbox table's reader and marker: what the relay needs, and `msc outbox status`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    Row,
    all_,
    bindparam,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.schema import outbox

decode_headers = msgspec.json.Decoder(dict[str, str]).decode  # an outbox row's headers
IdSpan = tuple[int, int]
"""Outbox ids `first` to `last`, both included. A claim skips spans: a relay's rows waiting
for their marks are a few spans (one per mark), its held-back rows one-id spans, as many as
there are; a claim takes any number of those (one array parameter), and a few hundred
longer spans at most."""
# One statement per run of consecutive ids whose sequences are `id + offset`: a relay's batch
# is usually one such run, so marking costs one UPDATE, not one per row.
_MARK_RUN = (
    update(outbox)
    .where(outbox.c.id.between(bindparam("first"), bindparam("last")))
    .values(
        published_at=bindparam("published"),
        attempts=outbox.c.attempts + 1,
        broker_sequence=outbox.c.id + bindparam("offset", type_=BigInteger),
    )
)


# What an `OutboxRecord` shows: never the payload, which may be the largest row there is.
_RECORD_COLUMNS = (
    outbox.c.event_id,
    outbox.c.topic,
    outbox.c.created_at,
    outbox.c.published_at,
    outbox.c.attempts,
    outbox.c.last_error,
    outbox.c.broker_sequence,
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message waiting to be published, in commit order (`id`)."""

    id: int
    event_id: str
    topic: str
    key: str
    headers: dict[str, str]
    payload: bytes
    created_at: datetime
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """How far behind publishing is: pending rows and when the oldest was written; of them,
    how many were tried before (refused, not acked, or lost by the broker), and the oldest
    of those, with its attempts and last error."""

    pending: int
    oldest_created_at: datetime | None
    published: int
    retried: int = 0
    first_retried: OutboxRecord | None = None

    def oldest_age_seconds(self, now: datetime | None = None) -> float:
        """Seconds since the oldest pending row was written; 0 when none is pending."""
        if self.oldest_created_at is None:
            return 0.0
        return max(0.0, ((now or datetime.now(UTC)) - self.oldest_created_at).total_seconds())


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One event's outbox row as the lineage view shows it: when it was written and
    published, how many attempts, the last error, and where the broker stored it."""

    event_id: str
    topic: str
    created_at: datetime
    published_at: datetime | None
    attempts: int
    last_error: str | None
    broker_sequence: int | None


class SqlOutbox:
    """Reads pending rows oldest first and marks them; a row is marked only once acked.

    Several relays may share the table (PostgreSQL): each claims rows under a lease
    (`rows_to_publish`), so they publish different rows, and a dead relay's rows are claimed
    by another once its lease runs out. On SQLite, one writer and so one relay per file,
    `SqliteOutbox` only reads.
    """

    def __init__(self, writer: Engine, reader: Engine) -> None:
        self._writer = writer
        self._reader = reader

    claims_in_microseconds = False
    """Whether `rows_to_publish` is a local read short enough for the relay to run on its
    event loop (SQLite), rather than a round trip to run on a worker thread (PostgreSQL)."""

    leases = True
    """Whether `rows_to_publish` leases the rows (relays share the outbox) or only reads
    them (one relay owns it)."""

    def pending(self, limit: int = 500, skip: Sequence[IdSpan] = ()) -> list[OutboxRow]:
        """Up to `limit` unpublished rows, oldest first, but those in the spans `skip`."""
        unpublished = outbox.c.published_at.is_(None)
        query = select(outbox).where(unpublished, *_outside(skip))
        query = query.order_by(outbox.c.id).limit(limit)
        with self._guard(self._reader), self._reader.connect() as connection:
            return [_row(row) for row in connection.execute(query)]

    def rows_to_publish(
        self, relay_id: str, limit: int, lease_seconds: float, skip: Sequence[IdSpan] = ()
    ) -> list[OutboxRow]:
        """The next rows `relay_id` should publish: up to `limit` unpublished rows, oldest
        first, but those in the spans `skip` (not read, nor leased anew), that no other relay
        holds a lease on, leased to `relay_id` for `lease_seconds` (by the database's clock).

        A relay's own leased rows come back to it (a retry, or a restart under the same id).
        Rows other relays are claiming at this moment are skipped, not waited for.
        """
        free = or_(
            outbox.c.claimed_until.is_(None),
            outbox.c.claimed_until < func.now(),
            outbox.c.claimed_by == relay_id,
        )
        chosen = (
            select(outbox.c.id)
            .where(outbox.c.published_at.is_(None), free, *_outside(skip))
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte("chosen")
        )
        leased = (
            update(outbox)
            .where(outbox.c.id == chosen.c.id)
            .values(
                claimed_by=relay_id,
                claimed_until=func.now() + timedelta(seconds=lease_seconds),
            )
            .returning(*outbox.c)
        )
        with self._guard(self._writer), self._writer.begin() as connection:
            rows = [_row(row) for row in connection.execute(leased)]
        return sorted(rows, key=lambda row: row.id)

    def release(self, relay_id: str) -> None:
        """End `relay_id`'s leases on rows it did not publish, so others take them at once."""
        self._update_where(
            (outbox.c.claimed_by == relay_id) & outbox.c.published_at.is_(None),
            claimed_until=None,
        )

    def mark_published(
        self, ids: Sequence[int], sequences: Sequence[int | None] | None = None
    ) -> None:
        """Record that the broker acknowledged these rows, and where it stored each
        (`sequences`, in the order of `ids`, when known); they are not published again."""
        if ids:
            known = [None] * len(ids) if sequences is None else sequences
            self._mark_runs(runs_of(ids, known), datetime.now(UTC))

    def _mark_runs(self, runs: list[IdRun], now: datetime) -> None:
        """Mark each run of rows published at `now`, with its broker sequences (or none)."""
        marks = [
            {"first": run.first, "last": run.last, "offset": run.offset, "published": now}
            for run in runs
        ]
        with self._guard(self._writer), self._writer.begin() as connection:
            connection.execute(_MARK_RUN, marks)

    def highest_sequence(self, topic: str, first: int, limit: int) -> int | None:
        """The highest broker sequence between `first` and `limit` that a published row of
        `topic` recorded, or None if none did."""
        query = select(func.max(outbox.c.broker_sequence)).where(
            outbox.c.topic == topic,
            outbox.c.published_at.is_not(None),
            outbox.c.broker_sequence.between(first, limit),
        )
        with self._guard(self._reader), self._reader.connect() as connection:
            highest: int | None = connection.execute(query).scalar()
        return highest

    def rearm(
        self, topic: str, first: int, limit: int, published_before: datetime, *, chunk: int
    ) -> int:
        """Make pending again up to `chunk` published rows of `topic` that recorded a broker
        sequence between `first` and `limit` and were marked before `published_before`, oldest
        first, with `last_error` saying why; returns how many (0: none left). The broker lost
        them, so they are published again, under their own id. The search runs on the reader,
        so the writer is held only to update the rows found."""
        lost = (
            outbox.c.topic == topic,
            outbox.c.published_at.is_not(None),
            outbox.c.published_at < published_before,
            outbox.c.broker_sequence.between(first, limit),
        )
        search = select(outbox.c.id).where(*lost).order_by(outbox.c.id).limit(chunk)
        with self._guard(self._reader), self._reader.connect() as connection:
            ids = list(connection.execute(search).scalars())
        if not ids:
            return 0
        rearmed = (
            update(outbox)
            .where(outbox.c.id.in_(ids), *lost)  # as found, unless marked again meanwhile
            .values(
                published_at=None,
                broker_sequence=None,
                claimed_until=None,
                last_error="the broker lost this acknowledged message; publishing it again",
            )
        )
        with self._guard(self._writer), self._writer.begin() as connection:
            count: int = connection.execute(rearmed).rowcount
        return count

    def record_failure(self, ids: Sequence[int], error: str) -> None:
        """Count a failed attempt and keep the error; the rows stay pending."""
        if ids:
            self._update(ids, attempts=outbox.c.attempts + 1, last_error=error[:1000])

    def record(self, event_id: str) -> OutboxRecord | None:
        """The outbox row of `event_id`, or None if this outbox has none."""
        query = select(*_RECORD_COLUMNS).where(outbox.c.event_id == event_id)
        with self._guard(self._reader), self._reader.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _record(row)

    def status(self) -> OutboxStatus:
        """Pending count, the oldest pending row's creation time, the published count, and
        the pending rows tried before (with the oldest of them)."""
        unpublished = outbox.c.published_at.is_(None)
        tried = outbox.c.attempts > 0
        pending = func.count().filter(unpublished)
        oldest = func.min(outbox.c.created_at).filter(unpublished)
        published = func.count().filter(outbox.c.published_at.is_not(None))
        retried = func.count().filter(unpublished, tried)
        first = select(*_RECORD_COLUMNS).where(unpublished, tried).order_by(outbox.c.id).limit(1)
        with self._guard(self._reader), self._reader.connect() as connection:
            row = connection.execute(select(pending, oldest, published, retried)).one()
            first_retried = connection.execute(first).first() if row[3] else None
        return OutboxStatus(
            pending=row[0],
            oldest_created_at=None if row[1] is None else _utc(row[1]),
            published=row[2],
            retried=row[3],
            first_retried=None if first_retried is None else _record(first_retried),
        )

    def _update(self, ids: Sequence[int], **values: object) -> None:
        self._update_where(outbox.c.id.in_(ids), **values)

    def _update_where(self, condition: ColumnElement[bool], **values: object) -> None:
        with self._guard(self._writer), self._writer.begin() as connection:
            connection.execute(update(outbox).where(condition).values(**values))

    @staticmethod
    def _guard(engine: Engine) -> _Guard:
        return _Guard(engine)


class _Guard:
    """Turns any database failure into `DatabaseUnavailable` naming the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, SQLAlchemyError):
            raise DatabaseUnavailable(engines.describe_failure(self._engine, exc)) from exc


@dataclass(slots=True)
class IdRun:
    """Consecutive outbox ids `first`..`last` whose broker sequences are `id + offset` (None:
    not known)."""

    first: int
    last: int
    offset: int | None


def runs_of(ids: Sequence[int], sequences: Sequence[int | None]) -> list[IdRun]:
    """`ids` grouped into runs of consecutive ids with the same `sequence - id`: a relay's
    batch is usually one such run, so marking it costs one UPDATE, not one per row."""
    runs: list[IdRun] = []
    for row_id, sequence in sorted(zip(ids, sequences, strict=True)):
        offset = None if sequence is None else sequence - row_id
        if runs and runs[-1].last == row_id - 1 and runs[-1].offset == offset:
            runs[-1].last = row_id
        else:
            runs.append(IdRun(row_id, row_id, offset))
    return runs


def singles_and_ranges(skip: Sequence[IdSpan]) -> tuple[list[int], list[IdSpan]]:
    """The ids of the one-id spans of `skip` (for one condition on one array parameter: SQLite
    limits how deep a chain of conditions may grow, and both databases how many parameters a
    statement may have), and its longer spans."""
    singles = [first for first, last in skip if first == last]
    return singles, [(first, last) for first, last in skip if first != last]


def _outside(skip: Sequence[IdSpan]) -> list[ColumnElement[bool]]:
    singles, ranges = singles_and_ranges(skip)
    outside: list[ColumnElement[bool]] = [~outbox.c.id.between(*span) for span in ranges]
    if singles:  # PostgreSQL, the dialect this class's own queries serve
        outside.append(outbox.c.id != all_(literal(singles, ARRAY(BigInteger))))
    return outside


def _row(row: Row[Any]) -> OutboxRow:
    return OutboxRow(
        id=row.id,
        event_id=row.event_id,
        topic=row.topic,
        key=row.key,
        headers=decode_headers(row.headers),
        payload=bytes(row.payload),
        created_at=_utc(row.created_at),
        attempts=row.attempts,
    )


def _record(row: Row[Any, Any, Any, Any, Any, Any, Any]) -> OutboxRecord:
    return OutboxRecord(
        event_id=row.event_id,
        topic=row.topic,
        created_at=_utc(row.created_at),
        published_at=None if row.published_at is None else _utc(row.published_at),
        attempts=row.attempts,
        last_error=row.last_error,
        broker_sequence=row.broker_sequence,
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
