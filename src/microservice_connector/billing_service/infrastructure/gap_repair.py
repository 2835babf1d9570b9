"""Gap repair: when an early event has waited past a short grace, billing fetches the cart's
missing versions from the cart store and applies them through the same version gate, so an
event the broker lost costs seconds, not a dead letter."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from microservice_connector.billing_service.application import CartEventIn
from microservice_connector.billing_service.infrastructure.cart_store import CartStore
from microservice_connector.billing_service.infrastructure.store_events import StoreEventApplier

DEFAULT_GRACE_S = 2.0
_REMEMBERED = 10_000  # early events whose first wait is remembered: bounds the memory


class StoreDisagrees(Exception):
    """The cart store itself lacks a version that billing was told came before another, or
    holds another event at that version: a real inconsistency, which no wait can heal."""


class GapRepair:
    """Fills a cart's gap from the store once one of its early events has waited `grace_s`
    (counted from when this process first deferred it). Idempotent: the version gate skips
    whatever was applied meanwhile."""

    def __init__(
        self,
        applier: StoreEventApplier,
        store: CartStore,
        last_version: Callable[[str], int],
        *,
        grace_s: float = DEFAULT_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._applier = applier
        self._store = store
        self._last_version = last_version
        self._grace_s = grace_s
        self._clock = clock
        self._first_deferred: OrderedDict[str, float] = OrderedDict()

    def due(self, event: CartEventIn) -> bool:
        """Whether `event`, deferred again just now, has waited past the grace."""
        now = self._clock()
        first = self._first_deferred.setdefault(event.event_id, now)
        self._first_deferred.move_to_end(event.event_id)
        while len(self._first_deferred) > _REMEMBERED:
            self._first_deferred.popitem(last=False)
        return now - first >= self._grace_s

    async def fill(self, early: CartEventIn) -> None:
        """Apply the versions before `early` that the bill lacks, from the store (and any
        after it the store holds). `StoreDisagrees` if the store lacks such a version, or
        holds another event than `early` at its version; `CartStoreUnreachable` or
        `BadStoreAnswer` when it could not be asked or answered nonsense; ledger errors as is."""
        last = await asyncio.to_thread(self._last_version, early.cart_id)
        if last >= early.version - 1:
            return  # applied meanwhile
        fetched = await self._store.events_after(early.cart_id, last)
        if len(fetched) < early.version - 1 - last:
            held = f"up to version {fetched[-1].version}" if fetched else f"nothing after {last}"
            raise StoreDisagrees(
                f"cart {early.cart_id}: the event store holds {held}, yet event "
                f"{early.event_id} came as version {early.version}: version "
                f"{last + len(fetched) + 1} is missing from the store itself"
            )
        await self._applier.apply(fetched, "repair")
        self._first_deferred.pop(early.event_id, None)
        stored = {event.version: event.event_id for event in fetched}.get(early.version)
        if stored not in (None, early.event_id):
            raise StoreDisagrees(
                f"cart {early.cart_id}: event {early.event_id} came as version {early.version}, "
                f"but the event store's version {early.version} is event {stored} (applied)"
            )
