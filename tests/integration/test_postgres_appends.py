"""PostgreSQL appends as they travel (issue 15): a batch's events, their positions and
outbox rows in one statement, on a connection the writer keeps between batches."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import (
    AppendRequest,
    DatabaseUnavailable,
    SqlEventStore,
    postgres_statements,
)
from microservice_connector.eventstore.schema import outbox
from support.postgres import with_options

AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def added(cart: str, count: int) -> list[NewEvent]:
    return [NewEvent("ItemAdded", ItemAdded(cart, f"item-{n}", 1, AT), AT) for n in range(count)]


def rows_scanned(node: dict[str, Any]) -> int:
    """Rows the table and index scans of an `EXPLAIN (ANALYZE, FORMAT JSON)` plan node and
    its children returned or filtered out, over all their loops (EXPLAIN gives each per
    loop, rounded)."""
    scanned = 0
    if node["Node Type"].endswith("Scan") and node["Node Type"] != "Function Scan":
        per_loop = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
        scanned += (per_loop + node.get("Rows Removed by Index Recheck", 0)) * node["Actual Loops"]
    return scanned + sum(rows_scanned(child) for child in node.get("Plans", []))


# The version check this store had before: a choice of plans for PostgreSQL's planner.
MAX_VERSION = """SELECT asked.aggregate_id,
    (SELECT max(version) FROM events WHERE events.aggregate_id = asked.aggregate_id)
FROM unnest($1::text[]) AS asked(aggregate_id)"""
ASKED = ["cart-1", "cart-2", "cart-100", "a", "none"]  # long, short, absent between and at ends
ASKED_ARRAY = "ARRAY[" + ", ".join(f"'{cart}'" for cart in ASKED) + "]"  # EXPLAIN takes no $1


@pytest.mark.postgres
@pytest.mark.parametrize("plans", ["force_generic_plan", "force_custom_plan"])
def test_the_version_check_reads_one_row_a_cart_whatever_the_statistics_say(
    postgres_url: str, plans: str
) -> None:
    # Statistics taken while every cart had one event, as a young store's may be (held in
    # this transaction, so autovacuum cannot refresh them), and the plans cached then
    # (generic) or made from them later (custom); then cart-1 grows to 2,001 events.
    store = SqlEventStore(postgres_url)
    statements = {"now": postgres_statements.VERSIONS.replace("%b", "$1"), "before": MAX_VERSION}
    try:
        store.append_batch(
            [
                AppendRequest(f"cart-{n}", "ShoppingCart", 0, added(f"cart-{n}", 1))
                for n in range(64)
            ]
        )
        with store.writer.connect() as connection:
            driver = postgres_statements.driver(connection)
            driver.execute("ANALYZE events")
            driver.execute(f"SET plan_cache_mode = {plans}")
            for name, statement in statements.items():
                driver.execute(f"PREPARE {name} (text[]) AS {statement}")
                driver.execute(f"EXPLAIN EXECUTE {name} (ARRAY['cart-1'])")  # plan it now
            for version in range(1, 2_000, 100):
                store.append(AppendRequest("cart-1", "ShoppingCart", version, added("cart-1", 100)))
            scanned, answered = {}, {}
            for name in statements:
                explained = driver.execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name} ({ASKED_ARRAY})"
                ).fetchone()
                assert explained is not None
                scanned[name] = rows_scanned(explained[0][0]["Plan"])
                answered[name] = dict(driver.execute(f"EXECUTE {name} ({ASKED_ARRAY})").fetchall())
                driver.execute(f"DEALLOCATE {name}")
            driver.rollback()
    finally:
        store.close()

    expected = {"cart-1": 2_001, "cart-2": 1, "cart-100": None, "a": None, "none": None}
    assert answered["now"] == answered["before"] == expected
    assert scanned["now"] <= len(ASKED)  # at most one row a cart: its newest, or a neighbour
    if plans == "force_generic_plan":  # where the old statement showed the fault here
        assert scanned["before"] > 2_000  # cart-1's whole history, or the whole table


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
