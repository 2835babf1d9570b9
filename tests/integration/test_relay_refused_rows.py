"""An outbox row the broker refuses for itself (too large) does not slow the rows after it:
the relay holds it back, publishes the others at once, and tries it again later."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore, held_back
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.nats import NatsPublisher, ensure_stream
from support.nats import NatsServer
from support.relays import running, until

AT = datetime(2026, 12, 6, tzinfo=UTC)
MAX_PAYLOAD = 4096
relay_log = "microservice_connector.eventstore.relay"


@pytest.fixture
def small_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server whose `max_payload` is 4 KiB."""
    config = tmp_path / "nats.conf"
    config.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    with NatsServer(tmp_path / "nats", args=["-c", str(config)]) as server:
        yield server


def add(store: SqlEventStore, cart: str, item: str = "item-1") -> str:
    """One `ItemAdded` to a new cart; its event id."""
    event = NewEvent("ItemAdded", ItemAdded(cart, item, 1, AT), AT)
    [recorded] = store.append(AppendRequest(cart, "ShoppingCart", 0, [event]))
    return recorded.event_id


async def test_a_row_over_max_payload_is_held_back_and_the_rows_after_it_go_out(
    sql_event_store: SqlEventStore,
    small_nats: NatsServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(held_back, "FIRST_RETRY_S", 60.0)  # no retry within the test
    client = await nats.connect(small_nats.url)
    js = client.jetstream()
    await ensure_stream(js, "CART", ["cart.events"])
    store = sql_event_store
    relay = OutboxRelay(store.outbox, NatsPublisher(js, ack_timeout=2.0), poll_interval=0.05)
    first, too_large = add(store, "cart-1"), add(store, "cart-2", "x" * MAX_PAYLOAD)
    add(store, "cart-3")
    try:
        async with running(relay):
            await until(lambda: store.outbox.status().pending == 1, "the two rows that fit")
            add(store, "cart-4")  # committed after the refusal: no backoff may delay it
            relay.wake()
            await until(lambda: store.outbox.status().pending == 1, "the row after it", 5.0)
            refused = store.outbox.record(too_large)
        stream = await js.stream_info("CART")
    finally:
        await client.close()

    assert refused is not None
    assert refused.published_at is None
    assert refused.attempts == 1, "tried again at once, not held back"
    assert f"over the broker's max_payload of {MAX_PAYLOAD}" in (refused.last_error or "")
    status = store.outbox.status()
    assert (status.pending, status.retried) == (1, 1)
    assert status.first_retried == refused
    assert stream.state.messages == 3
    record = store.outbox.record(first)
    assert record is not None
    assert record.published_at is not None
    [line] = [r for r in caplog.records if r.name == relay_log and r.levelno == logging.ERROR]
    assert too_large in line.getMessage()
    assert "tried again in 60 s" in line.getMessage()


class RefusingPublisher:
    """Acknowledges every message but `refused_id`, which it refuses as too large while
    `refusing` holds."""

    def __init__(self, refused_id: str) -> None:
        self.refused_id = refused_id
        self.refusing = True
        self.published: list[str] = []

    async def publish(self, messages: Sequence[Message]) -> list[PublishResult]:
        results = []
        for message in messages:
            if message.id == self.refused_id and self.refusing:
                results.append(PublishResult(message.id, error="too large", refused=True))
            else:
                self.published.append(message.id)
                results.append(PublishResult(message.id, sequence=len(self.published)))
        return results

    async def close(self) -> None:
        return None


def test_outbox_status_names_the_oldest_row_tried_before(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from microservice_connector.cli.app import app

    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    add(store, "cart-1")
    refused = add(store, "cart-2")
    [row] = [row for row in store.outbox.pending() if row.event_id == refused]
    store.outbox.record_failure([row.id], "5000 bytes [with headers], over max_payload")
    store.outbox.record_failure([row.id], "5000 bytes [with headers], over max_payload")
    store.close()

    shown = CliRunner().invoke(app, ["outbox", "status", "--data-dir", str(tmp_path)])

    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "pending: 2" in text
    assert (
        f"retried: 1, the oldest event {refused} after 2 attempts:"
        " 5000 bytes [with headers], over max_payload"
    ) in text


async def test_a_held_back_row_goes_out_once_the_broker_takes_it(
    sql_event_store: SqlEventStore,
) -> None:
    store = sql_event_store
    refused = add(store, "cart-1")
    publisher = RefusingPublisher(refused)
    relay = OutboxRelay(store.outbox, publisher, poll_interval=0.05)
    after = add(store, "cart-2")
    async with running(relay):
        await until(lambda: publisher.published == [after], "the row after the refused one")
        publisher.refusing = False  # as when an operator raises the broker's limit
        await until(lambda: store.outbox.status().pending == 0, "the held-back row published")

    assert publisher.published == [after, refused]
    assert (record := store.outbox.record(refused)) is not None
    assert record.attempts == 2  # one refusal, then the publish
    assert relay.failed_total == 1


def test_a_claim_neither_reads_nor_leases_the_rows_it_skips(
    sql_event_store: SqlEventStore,
) -> None:
    store = sql_event_store
    first, held, last = add(store, "cart-1"), add(store, "cart-2"), add(store, "cart-3")
    ids = {row.event_id: row.id for row in store.outbox.pending()}

    claimed = store.outbox.rows_to_publish("relay-1", 10, 60.0, skip=[(ids[held], ids[held])])
    by_another = store.outbox.rows_to_publish("relay-2", 10, 60.0)

    assert [row.event_id for row in claimed] == [first, last]
    # Not leased by relay-1: where relays share the outbox, another may try it meanwhile.
    assert held in [row.event_id for row in by_another]


def test_a_claim_skips_whole_spans_of_rows_and_reads_the_rest_in_order(
    sql_event_store: SqlEventStore,
) -> None:
    store = sql_event_store
    added = [add(store, f"cart-{n}") for n in range(7)]
    ids = [row.id for row in store.outbox.pending()]
    spans = [(ids[1], ids[3]), (ids[5], ids[5])]  # as the rows on the way to their marks

    claimed = store.outbox.rows_to_publish("relay-1", 3, 60.0, skip=spans)
    read = store.outbox.pending(10, skip=spans)

    assert [row.event_id for row in claimed] == [added[0], added[4], added[6]]
    assert [row.event_id for row in read] == [added[0], added[4], added[6]]


def test_a_claim_skips_tens_of_thousands_of_held_back_rows(sql_event_store: SqlEventStore) -> None:
    """As many one-id spans as rows the broker refuses: SQLite limits how deep a chain of
    conditions grows (1,000), and PostgreSQL a statement's parameters (65,535), so they must
    become neither a condition nor a parameter each."""
    store = sql_event_store
    first, held = add(store, "cart-1"), add(store, "cart-2")
    ids = {row.event_id: row.id for row in store.outbox.pending()}
    others = [(n, n) for n in range(10_000, 150_000, 2)]  # held rows since published

    claimed = store.outbox.rows_to_publish("relay-1", 10, 60.0, skip=[*others, (ids[held],) * 2])

    assert [row.event_id for row in claimed] == [first]
