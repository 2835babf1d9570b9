"""The audit's decisions against a broker whose holdings the test sets, on SQLite and
PostgreSQL outboxes: what it re-arms, in chunks, and what it leaves alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore
from microservice_connector.eventstore.broker_audit import BrokerAudit
from microservice_connector.messaging.holdings import Holding

TOPIC = "cart.events"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
LAST = 2**63 - 1


class SetHoldings:
    """A broker whose one log of `cart.events` holds what the test says."""

    def __init__(self, last: int, created: datetime | None = None) -> None:
        self.holding = Holding(1, LAST, last, created)

    async def holdings(self, topic: str) -> list[Holding]:
        return [self.holding]


@pytest.fixture
def store(sql_event_store: SqlEventStore) -> SqlEventStore:
    return sql_event_store


def published(store: SqlEventStore, count: int) -> list[str]:
    """`count` events, their outbox rows marked as stored at sequences 1..count; their ids."""
    for n in range(count):
        event = NewEvent("ItemAdded", ItemAdded(f"cart-{n}", "item-001", 1, NOW), NOW)
        store.append(AppendRequest(f"cart-{n}", "ShoppingCart", 0, [event]))
    rows = store.outbox.pending(count)
    store.outbox.mark_published([row.id for row in rows], list(range(1, count + 1)))
    return [row.event_id for row in rows]


async def test_a_lost_tail_is_re_armed_in_chunks(store: SqlEventStore) -> None:
    ids = published(store, 7)
    audit = BrokerAudit(store.outbox, SetHoldings(last=2), [TOPIC], chunk=2)

    [loss] = await audit.check()

    assert (loss.kind, loss.rearmed) == ("tail_lost", 5)
    assert [row.event_id for row in store.outbox.pending()] == ids[2:]
    record = store.outbox.record(ids[2])
    assert record is not None
    assert (record.published_at, record.broker_sequence) == (None, None)
    assert "broker lost" in (record.last_error or "")


async def test_a_log_created_after_rows_were_acknowledged_re_arms_them_all(
    store: SqlEventStore,
) -> None:
    published(store, 4)
    created = datetime.now(UTC) + timedelta(seconds=1)
    audit = BrokerAudit(store.outbox, SetHoldings(last=4, created=created), [TOPIC], chunk=3)

    [loss] = await audit.check()

    assert (loss.kind, loss.rearmed) == ("recreated", 4)
    assert store.outbox.status().pending == 4


async def test_a_broker_holding_everything_re_arms_nothing(store: SqlEventStore) -> None:
    published(store, 4)
    created = datetime.now(UTC) - timedelta(hours=1)
    audit = BrokerAudit(store.outbox, SetHoldings(last=4, created=created), [TOPIC])

    assert await audit.check() == []
    assert await audit.acknowledged([(TOPIC, 5), (TOPIC, 6)], datetime.now(UTC)) == []
    assert store.outbox.status().pending == 0


async def test_a_new_message_at_an_acknowledged_sequence_re_arms_what_was_stored_there(
    store: SqlEventStore,
) -> None:
    ids = published(store, 6)
    audit = BrokerAudit(store.outbox, SetHoldings(last=6), [TOPIC])
    assert await audit.check() == []

    [loss] = await audit.acknowledged([(TOPIC, 4), (TOPIC, 5)], datetime.now(UTC))

    assert (loss.kind, loss.rearmed) == ("sequence_reused", 3)
    assert [row.event_id for row in store.outbox.pending()] == ids[3:]
