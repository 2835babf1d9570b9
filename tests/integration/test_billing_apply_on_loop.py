"""Billing applies a batch on its event loop's own thread when told to (the service does on a
SQLite file) and the writer is free, on a worker thread otherwise; the bills are the same
either way. The service's test of "free": no pooled writer connection is checked out."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.billing_service.application.ledger import CartEventIn, Outcome
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.registry import default_registry
from microservice_connector.eventstore.engine import connections_in_use
from microservice_connector.messaging.settlement import Ack
from microservice_connector.settings import Settings
from support.cart_deliveries import item_added


class ThreadNoting(BillingLedger):
    """The ledger, noting the thread each batch is applied on."""

    threads: list[int]

    def apply_batch(
        self, events: Sequence[CartEventIn], *, feed_position: int | None = None
    ) -> list[Outcome]:
        self.threads.append(threading.get_ident())
        return super().apply_batch(events, feed_position=feed_position)


@pytest.mark.parametrize(
    ("on_loop", "writer_free", "expect_loop"),
    [(True, True, True), (False, True, False), (True, False, False)],
    ids=["on-loop", "worker-thread", "on-loop-but-the-writer-is-busy"],
)
def test_a_batch_is_applied_on_the_thread_asked_for_and_billed_alike(
    tmp_path: Path, on_loop: bool, writer_free: bool, expect_loop: bool
) -> None:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    try:
        ledger = ThreadNoting(repository)
        ledger.threads = []
        handler = CartEventHandler(
            ledger, default_registry(), apply_on_loop=on_loop, writer_free=lambda: writer_free
        )

        async def deliver() -> tuple[list[object], int]:
            batch = [item_added("cart-1", 1, 2), item_added("cart-1", 2, 3), item_added("c-2", 1)]
            return [*await handler(batch)], threading.get_ident()

        outcomes, loop_thread = asyncio.run(deliver())

        assert [o.label for o in outcomes if isinstance(o, Ack)] == ["applied"] * 3
        assert (ledger.threads == [loop_thread]) is expect_loop
        assert len(ledger.threads) == 1
        assert repository.last_versions(["cart-1", "c-2"]) == {"cart-1": 2, "c-2": 1}
    finally:
        repository.close()


def test_the_writer_counts_as_busy_while_another_thread_holds_it(tmp_path: Path) -> None:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    try:
        writer = repository.store.writer
        assert connections_in_use(writer) == 0
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with writer.connect():
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        busy = connections_in_use(writer)
        release.set()
        holder.join(10)

        assert busy == 1
        assert connections_in_use(writer) == 0
    finally:
        repository.close()
