"""Applies cart events to bills: each at most once, in version order, with its effects."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from microservice_connector import tracing
from microservice_connector.billing_service.application.ports import (
    BillingRepository,
    ConcurrentBillUpdate,
)
from microservice_connector.billing_service.domain import Bill, Invoice, VersionCheck
from microservice_connector.events.cart import CartCheckedOut, CartEvent

CONFLICT_RETRIES = 5


class Outcome(enum.Enum):
    """What became of one event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # its version was already applied: nothing changed
    DEFERRED = "deferred"  # an earlier version is missing: nothing changed, try later


@dataclass(frozen=True, slots=True)
class CartEventIn:
    """A cart event as billing receives it: its payload and the envelope the gate needs."""

    event_id: str
    cart_id: str
    version: int
    event: CartEvent
    trace: Mapping[str, str] | None = None  # the W3C context it arrived with


class BillingLedger:
    """The version gate: a batch commits its bills, invoices and outbox rows in one unit of
    work, so a redelivered or reordered event can never bill twice or out of order."""

    def __init__(self, repository: BillingRepository) -> None:
        self._repository = repository
        self.invoices_issued = 0
        self.unpriced_lines = 0

    def apply_batch(
        self, events: Sequence[CartEventIn], *, feed_position: int | None = None
    ) -> list[Outcome]:
        """Apply `events` (any order, any duplicates) in one transaction; one outcome each.
        With `feed_position`, the cart feed's position is saved in that same transaction.

        Instances sharing a database race only on the same carts: the loser's transaction
        rolls back and is run again on what the winner committed, up to `CONFLICT_RETRIES`
        times; then `ConcurrentBillUpdate` (nothing applied; deliver the batch again).
        """
        for _ in range(CONFLICT_RETRIES):
            try:
                return self._apply_once(events, feed_position)
            except ConcurrentBillUpdate:
                continue
        return self._apply_once(events, feed_position)

    def _apply_once(
        self, events: Sequence[CartEventIn], feed_position: int | None
    ) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        issued: list[Invoice] = []
        order = sorted(range(len(events)), key=lambda i: (events[i].cart_id, events[i].version))
        with self._repository.transaction() as uow:
            known = uow.get_bills({event.cart_id for event in events})
            bills: dict[str, Bill] = {}
            for index in order:
                incoming = events[index]
                bill = bills.get(incoming.cart_id) or known.get(incoming.cart_id)
                bill = bill or Bill(incoming.cart_id)
                check = bill.check(incoming.version)
                if check is VersionCheck.DUPLICATE:
                    outcomes[index] = Outcome.DUPLICATE
                    continue
                if check is VersionCheck.GAP:
                    outcomes[index] = Outcome.DEFERRED
                    continue
                with tracing.span("billing.apply", parent=incoming.trace):
                    bill.apply(incoming.event, incoming.version, uow.price_of)
                    bills[incoming.cart_id] = bill
                    outcomes[index] = Outcome.APPLIED
                    if isinstance(incoming.event, CartCheckedOut):
                        with tracing.span("billing.invoice"):  # InvoiceIssued carries it on
                            # Dated by the checkout itself: a rebuild issues the same invoice.
                            invoice = bill.invoice(incoming.event.timestamp)
                            if uow.issue_invoice(invoice):
                                issued.append(invoice)
            uow.save_bills(list(bills.values()))
            if feed_position is not None:
                uow.save_feed_position(feed_position)
            uow.commit()
        # Counted once committed, so a rolled-back batch counts nothing.
        self.invoices_issued += len(issued)
        self.unpriced_lines += sum(line.unpriced for inv in issued for line in inv.lines.values())
        return [outcomes[index] for index in range(len(events))]
