"""`GroupCommitStore(commit_on_loop=True)`, as the cart service runs on SQLite: what the event
loop submits in one pass commits together on the loop's own thread, each caller hears its own
outcome, the relay's marks land too, and nothing submitted is left unanswered by a bug or by
`close`. On SQLite and PostgreSQL (the mode is for SQLite, but it stores the same rows)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import (
    AppendRequest,
    ConcurrencyError,
    GroupCommitStore,
    Snapshot,
    SqlEventStore,
)
from microservice_connector.eventstore.errors import DatabaseUnavailable, WriterStopped
from microservice_connector.eventstore.group_commit import SETTLE_PASSES
from microservice_connector.eventstore.port import AppendResult

AT = datetime(2026, 12, 5, tzinfo=UTC)
ANSWER_WITHIN_S = 10


def add(cart_id: str, version: int = 0, item_id: str = "item-001") -> AppendRequest:
    event = NewEvent("ItemAdded", ItemAdded(cart_id, item_id, 1, AT), AT)
    return AppendRequest(cart_id, "ShoppingCart", version, [event])


class Recording:
    """An `EventStore` that notes the size of each batch and the thread that committed it."""

    def __init__(self, store: SqlEventStore) -> None:
        self.store = store
        self.batches: list[tuple[int, int]] = []

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        self.batches.append((len(requests), threading.get_ident()))
        return self.store.append_batch(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def recording(sql_event_store: SqlEventStore) -> Recording:
    return Recording(sql_event_store)


def on_loop(recording: Recording) -> GroupCommitStore:
    """Group commits on the loop over `recording`, marking its store's outbox."""
    return GroupCommitStore(recording, outbox=recording.store.outbox, commit_on_loop=True)  # type: ignore[arg-type]


async def test_one_pass_of_the_loop_commits_together_on_the_loop_s_thread(
    recording: Recording, sql_event_store: SqlEventStore
) -> None:
    grouped = on_loop(recording)
    carts = [f"cart-{n}" for n in range(50)]

    results = await asyncio.wait_for(
        asyncio.gather(*(grouped.append(add(cart)) for cart in carts)), ANSWER_WITHIN_S
    )

    assert [(r[0].aggregate_id, r[0].version) for r in results] == [(c, 1) for c in carts]
    assert recording.batches == [(50, threading.get_ident())]
    assert len(sql_event_store.read_all(limit=100)) == 50


async def test_appends_of_the_passes_right_after_join_the_group_up_to_its_settling(
    recording: Recording,
) -> None:
    grouped = on_loop(recording)
    loop = asyncio.get_running_loop()
    appends: list[asyncio.Task[Any]] = []

    def submit_in_later_passes(cart: int, passes: int) -> None:
        appends.append(asyncio.ensure_future(grouped.append(add(f"cart-{cart}"))))
        if passes:
            loop.call_soon(submit_in_later_passes, cart + 1, passes - 1)

    # One append a pass for 10 passes: the group waits while it grows, up to its limit.
    submit_in_later_passes(0, 9)
    for _ in range(10):  # the passes that submit them
        await asyncio.sleep(0)
    assert len(appends) == 10
    await asyncio.wait_for(asyncio.gather(*appends), ANSWER_WITHIN_S)

    sizes = [size for size, _ in recording.batches]
    assert sum(sizes) == 10
    assert sizes[0] == 1 + SETTLE_PASSES, sizes  # the first four passes' appends, together
    assert len(sizes) < 10


async def test_a_lone_append_waits_only_one_more_pass(recording: Recording) -> None:
    grouped = on_loop(recording)
    appending = asyncio.ensure_future(grouped.append(add("cart-1")))
    passes = 0
    while not recording.batches:
        passes += 1
        await asyncio.sleep(0)

    assert passes <= 3  # submit, the one look-ahead, the commit
    assert (await asyncio.wait_for(appending, ANSWER_WITHIN_S))[0].version == 1


async def test_the_later_of_two_writers_of_one_version_is_told_it_lost(
    recording: Recording, sql_event_store: SqlEventStore
) -> None:
    grouped = on_loop(recording)

    first, second = await asyncio.gather(
        grouped.append(add("cart-1")),
        grouped.append(add("cart-1", item_id="item-002")),
        return_exceptions=True,
    )

    assert isinstance(second, ConcurrencyError)
    assert sql_event_store.load("cart-1") == first


async def test_the_relay_s_marks_land_on_the_loop(
    recording: Recording, sql_event_store: SqlEventStore
) -> None:
    grouped = on_loop(recording)
    await grouped.append(add("cart-1"))
    [row] = sql_event_store.outbox.pending()

    await asyncio.wait_for(grouped.mark_published([row.id], [7]), ANSWER_WITHIN_S)

    assert sql_event_store.outbox.pending() == []


@pytest.mark.parametrize("commit_on_loop", [True, False], ids=["on the loop", "on a thread"])
async def test_snapshots_are_saved_after_the_next_commit_the_later_one_kept(
    sql_event_store: SqlEventStore, commit_on_loop: bool
) -> None:
    grouped = GroupCommitStore(
        sql_event_store, snapshots=sql_event_store.snapshots, commit_on_loop=commit_on_loop
    )
    try:
        await grouped.append(add("cart-1"))
        await grouped.append(add("cart-1", 1))
        first, second = (Snapshot("cart-1", "ShoppingCart", v, b"{}", 1, AT) for v in (1, 2))

        saves = asyncio.gather(grouped.save_snapshot(second), grouped.save_snapshot(first))
        await asyncio.wait_for(saves, ANSWER_WITHIN_S)

        assert sql_event_store.snapshots.load_snapshot("cart-1") == second
    finally:
        grouped.close()


async def test_a_store_given_no_snapshot_writer_refuses_to_save_one(
    recording: Recording,
) -> None:
    with pytest.raises(LookupError, match="snapshots="):
        await on_loop(recording).save_snapshot(Snapshot("cart-1", "ShoppingCart", 1, b"", 1, AT))


async def test_a_bug_answers_every_caller_and_refuses_what_comes_after(
    recording: Recording, sql_event_store: SqlEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    grouped = on_loop(recording)

    def broken(_: object) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(grouped, "_commit", broken)

    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(grouped.append(add(f"cart-{n}")) for n in range(3)), return_exceptions=True
        ),
        ANSWER_WITHIN_S,
    )

    assert all(isinstance(outcome, WriterStopped) for outcome in outcomes), outcomes
    with pytest.raises(WriterStopped, match="RuntimeError: a bug in the writer"):
        await grouped.append(add("cart-later"))
    with pytest.raises(DatabaseUnavailable, match="writer stopped"):
        await grouped.ping()


async def test_close_commits_what_the_loop_had_not_committed_yet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    store = SqlEventStore(url, outbox_topic="cart.events")
    grouped = GroupCommitStore(store, outbox=store.outbox, commit_on_loop=True)
    waiting = [asyncio.ensure_future(grouped.append(add(f"cart-{n}"))) for n in range(3)]
    await asyncio.sleep(0)  # each has submitted; the loop's commit has not run yet

    grouped.close()

    answered = await asyncio.wait_for(asyncio.gather(*waiting), ANSWER_WITHIN_S)
    assert [events[0].version for events in answered] == [1, 1, 1]
    reopened = SqlEventStore(url)
    try:
        assert len(reopened.read_all(limit=10)) == 3
    finally:
        reopened.close()
