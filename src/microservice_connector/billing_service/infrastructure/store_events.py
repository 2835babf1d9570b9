"""Applying events read from the cart store (not from the broker) through the version gate,
with their lineage noted: shared by gap repair and feed catch-up."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from microservice_connector.billing_service.application import BillingLedger, CartEventIn, Outcome
from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog, Source


class StoreEventApplier:
    """Applies a batch of store events in one ledger transaction (with the feed position, if
    given), then notes each applied one in the handling log as got from `source` and counts
    it with `on_healed`; the ledger's errors propagate and nothing is noted."""

    def __init__(
        self,
        ledger: BillingLedger,
        handled: HandlingLog,
        on_healed: Callable[[Source, int], None] = lambda source, count: None,
    ) -> None:
        self._ledger = ledger
        self._handled = handled
        self._on_healed = on_healed

    async def apply(
        self,
        events: Sequence[CartEventIn],
        source: Source,
        *,
        feed_position: int | None = None,
    ) -> list[Outcome]:
        """One outcome per event, in order, once committed."""
        outcomes = await asyncio.to_thread(
            self._ledger.apply_batch, events, feed_position=feed_position
        )
        applied = [
            (event.event_id, event.cart_id, event.version, outcome.value)
            for event, outcome in zip(events, outcomes, strict=True)
            if outcome is Outcome.APPLIED
        ]
        if applied:
            self._handled.record_batch(applied, via=source)
            self._on_healed(source, len(applied))
        return outcomes
