"""PostgreSQL appends as they travel (issue 15): a batch's events, their positions and
outbox rows in one statement, on a connection the writer keeps between batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import (
    AppendRequest,
    DatabaseUnavailable,
    SqlEventStore,
)
from microservice_connector.eventstore.schema import outbox
from support.postgres import with_options

AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def added(cart: str, count: int) -> list[NewEvent]:
    return [NewEvent("ItemAdded", ItemAdded(cart, f"item-{n}", 1, AT), AT) for n in range(count)]


@pytest.mark.postgres
def test_a_batch_answers_the_positions_stored_and_its_outbox_rows_follow_them(
    postgres_url: str,
) -> None:
    store = SqlEventStore(postgres_url)
    try:
        store.append(AppendRequest("cart-0", "ShoppingCart", 0, added("cart-0", 1)))
        answers = store.append_batch(
            [
                AppendRequest("cart-a", "ShoppingCart", 0, added("cart-a", 3)),
                AppendRequest("cart-0", "ShoppingCart", 0, added("cart-0", 1)),  # stale
                AppendRequest("cart-b", "ShoppingCart", 0, added("cart-b", 2)),
                AppendRequest("cart-a", "ShoppingCart", 3, added("cart-a", 1)),
            ]
        )
        stored = store.read_all()
        with store.reader.connect() as connection:
            outbox_order = list(connection.execute(select(outbox.c.event_id).order_by(outbox.c.id)))
    finally:
        store.close()

    answered = [event for answer in answers if isinstance(answer, list) for event in answer]
    assert [(e.aggregate_id, e.version) for e in answered] == [
        ("cart-a", 1),
        ("cart-a", 2),
        ("cart-a", 3),
        ("cart-b", 1),
        ("cart-b", 2),
        ("cart-a", 4),
    ]
    assert answered == stored[1:]  # positions, ids and all, exactly as stored
    assert [e.position for e in answered] == sorted(e.position for e in answered)
    assert [row.event_id for row in outbox_order] == [e.event_id for e in stored]


@pytest.mark.postgres
def test_after_the_database_drops_the_writers_connection_the_next_append_succeeds(
    postgres_url: str,
) -> None:
    name = f"msc-{uuid.uuid4().hex[:12]}"
    store = SqlEventStore(with_options(postgres_url, f"-capplication_name={name}"))
    admin = create_engine(postgres_url, poolclass=NullPool)
    outcomes: list[str] = []
    try:
        store.append(AppendRequest("cart-1", "ShoppingCart", 0, added("cart-1", 1)))
        with admin.connect() as connection:
            dropped = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": name},
            ).all()
        for version in (1, 2):  # the first may find its connection gone; the second may not
            try:
                store.append(AppendRequest("cart-1", "ShoppingCart", version, added("cart-1", 1)))
                outcomes.append("stored")
            except DatabaseUnavailable:
                outcomes.append("unavailable")
                break
        store.append(
            AppendRequest(
                "cart-1", "ShoppingCart", outcomes.count("stored") + 1, added("cart-1", 1)
            )
        )
        versions = [event.version for event in store.load("cart-1")]
    finally:
        store.close()
        admin.dispose()

    assert dropped, "the store had connections to drop"
    assert outcomes in (["stored", "stored"], ["unavailable"])
    assert versions == list(range(1, outcomes.count("stored") + 3))
