"""Billing's batch handler: decode, gate and apply a batch, and say what became of each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from microservice_connector.billing_service.application import (
    BillingLedger,
    CartEventIn,
    ConcurrentBillUpdate,
    Outcome,
)
from microservice_connector.billing_service.infrastructure.cart_messages import (
    PoisonMessage,
    stated_version,
    to_cart_event,
)
from microservice_connector.billing_service.infrastructure.cart_store import (
    CartStoreUnreachable,
)
from microservice_connector.billing_service.infrastructure.feed_watermark import FeedWatermark
from microservice_connector.billing_service.infrastructure.gap_repair import (
    GapRepair,
    StoreDisagrees,
)
from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog
from microservice_connector.events.numbers import plain_number
from microservice_connector.events.registry import EventRegistry
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.failures import DataRejected
from microservice_connector.eventstore.outbox_rows import POSITION_HEADER
from microservice_connector.messaging.consumer import Ack, Reject, Retry, Settlement
from microservice_connector.messaging.message import Delivery

log = logging.getLogger(__name__)

GAP_RETRY_DELAY_S = 0.2  # the first waits of an early event: reordering heals fast
GAP_RETRY_MAX_DELAY_S = 5.0  # later waits grow to this
CONFLICT_RETRY_DELAY_S = 0.1
# How long an early event waits for its predecessor before it is reported as a dead letter.
# The predecessor may be held by a billing instance that died, and comes back only after the
# consumer's ack wait (30 s), perhaps more than once: so minutes, not seconds.
DEFAULT_GAP_WAIT_S = 300.0
_SETTLEMENTS = {Outcome.APPLIED: Ack("applied"), Outcome.DUPLICATE: Ack("duplicate")}


class CartEventHandler:
    """Applies a batch in one transaction; poison is rejected, early events come back later
    (and with `repair`, their gap is filled from the cart store once they waited its grace),
    and while the database is away everything is retried without counting as a failure.
    With `watermark`, the feed positions of the events whose bills are committed at or past
    them are noted there, for catch-up. With `apply_on_loop` (a local SQLite file) a batch
    is applied on the event loop's own thread, which it holds for the commit (about 1 ms
    under load), instead of going to a worker thread and back; but on a worker thread while
    `writer_free()` says another thread holds the database's writer (a catch-up batch, the
    relay's marks), so that the loop never waits for it."""

    def __init__(
        self,
        ledger: BillingLedger,
        registry: EventRegistry,
        handled: HandlingLog | None = None,
        *,
        gap_wait_s: float = DEFAULT_GAP_WAIT_S,
        repair: GapRepair | None = None,
        watermark: FeedWatermark | None = None,
        apply_on_loop: bool = False,
        writer_free: Callable[[], bool] = lambda: True,
    ) -> None:
        self._ledger = ledger
        self._apply_on_loop = apply_on_loop
        self._writer_free = writer_free
        self._watermark = watermark
        self._registry = registry
        self.handled = handled or HandlingLog()
        self._gap_attempts = gap_attempts(gap_wait_s)
        self._repair = repair

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Settlement]:
        """One settlement per delivery, in order."""
        settlements: list[Settlement | None] = [None] * len(deliveries)
        decoded: list[tuple[int, CartEventIn]] = []
        for index, delivery in enumerate(deliveries):
            try:
                decoded.append(
                    (index, to_cart_event(delivery.message, self._registry, delivery.sequence))
                )
            except PoisonMessage as exc:
                settlements[index] = Reject(str(exc))
                self._note_poison(delivery, str(exc))
        if decoded:
            for (index, _), settlement in zip(
                decoded, await self._apply(decoded, deliveries), strict=True
            ):
                settlements[index] = settlement
        return [s if s is not None else Retry(1.0, "not handled") for s in settlements]

    async def _apply(
        self, decoded: list[tuple[int, CartEventIn]], deliveries: Sequence[Delivery]
    ) -> list[Settlement]:
        events = [event for _, event in decoded]
        try:
            if self._apply_on_loop and self._writer_free():
                outcomes = self._ledger.apply_batch(events)
            else:
                outcomes = await asyncio.to_thread(self._ledger.apply_batch, events)
        except DatabaseUnavailable as exc:
            return [Retry(1.0, str(exc), failure=False) for _ in events]
        except ConcurrentBillUpdate as exc:  # other instances kept winning: not a failure
            return [Retry(CONFLICT_RETRY_DELAY_S, str(exc), failure=False) for _ in events]
        except Exception as exc:
            if len(events) == 1:
                # Counted, so after bounded attempts it alone goes to the dead letters.
                if not isinstance(exc, DataRejected):
                    log.exception("billing: event %s failed", events[0].event_id)
                return [Retry(0.5, f"billing cannot apply it: {exc}")]
            # One bad event must not hold back the others: apply them one at a time.
            return [(await self._apply([pair], deliveries))[0] for pair in decoded]
        self.handled.record_batch(
            (event.event_id, event.cart_id, event.version, outcome.value)
            for event, outcome in zip(events, outcomes, strict=True)
        )
        if self._watermark is not None:
            self._watermark.handled(
                position
                for (index, _), outcome in zip(decoded, outcomes, strict=True)
                if outcome in _SETTLEMENTS
                and (position := feed_position(deliveries[index])) is not None
            )
        settlements = []
        for (index, event), outcome in zip(decoded, outcomes, strict=True):
            settlement = self._settlement(outcome, deliveries[index].attempt, event)
            if outcome is Outcome.DEFERRED and self._repair and self._repair.due(event):
                settlement = await self._repaired(event, settlement)
            settlements.append(settlement)
        return settlements

    async def _repaired(self, early: CartEventIn, waiting: Settlement) -> Settlement:
        """Fill `early`'s gap from the cart store: then it comes back at once (a duplicate, or
        next in line); it is rejected only when the store itself disagrees."""
        assert self._repair is not None
        try:
            await self._repair.fill(early)
        except StoreDisagrees as exc:
            self.handled.record(early.event_id, early.cart_id, early.version, "rejected", str(exc))
            return Reject(str(exc))
        except CartStoreUnreachable as exc:  # the broker may yet bring it: wait as before
            log.warning("billing: cannot repair cart %s from the store: %s", early.cart_id, exc)
            return waiting
        except DatabaseUnavailable as exc:
            return Retry(1.0, str(exc), failure=False)
        except ConcurrentBillUpdate as exc:
            return Retry(CONFLICT_RETRY_DELAY_S, str(exc), failure=False)
        except Exception as exc:
            log.exception("billing: repairing cart %s from the store failed", early.cart_id)
            return Retry(0.5, f"repairing its gap from the store failed: {exc}")
        return Retry(0.0, "its gap was filled from the event store", failure=False)

    def _note_poison(self, delivery: Delivery, error: str) -> None:
        headers = delivery.message.headers
        event_id = headers.get("event-id") or delivery.message.id
        cart_id = headers.get("aggregate-id", "")
        self.handled.record(event_id, cart_id, stated_version(delivery.message), "rejected", error)

    def _settlement(self, outcome: Outcome, attempt: int, event: CartEventIn) -> Settlement:
        if outcome is not Outcome.DEFERRED:
            return _SETTLEMENTS[outcome]
        if attempt >= self._gap_attempts:
            return Reject(
                f"cart {event.cart_id}: version {event.version} waited {attempt} times "
                "for an earlier one"
            )
        return Retry(
            gap_delay(attempt),
            f"cart {event.cart_id} version {event.version} is early",
            failure=False,
        )


def feed_position(delivery: Delivery) -> int | None:
    """The cart feed position the relay put in the message's headers; None for a message
    without one (published before it was added, or by another producer)."""
    position = plain_number(delivery.message.headers.get(POSITION_HEADER, ""))
    return position if position is not None and position > 0 else None


def gap_delay(attempt: int) -> float:
    """Seconds before an early event's next try: 0.2 s for its first five, then 1.5 times
    longer each try, up to 5 s."""
    return min(GAP_RETRY_DELAY_S * 1.5 ** max(0, attempt - 5), GAP_RETRY_MAX_DELAY_S)


def gap_attempts(wait_s: float) -> int:
    """The delivery attempt at which an early event has waited `wait_s` in all."""
    attempt, waited = 0, 0.0
    while waited < wait_s:
        attempt += 1
        waited += gap_delay(attempt)
    return max(attempt, 1)
