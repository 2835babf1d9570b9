"""A cart's running bill: applies each cart event once, in version order, each line priced
at the price in effect at the event's own time (so a replay prices it the same)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from microservice_connector.events.cart import CartCheckedOut, CartEvent, ItemAdded, ItemRemoved


@dataclass(frozen=True, slots=True)
class Price:
    """One version of an item's unit price."""

    unit_price_cents: int
    version: int


PriceLookup = Callable[[str, datetime], Price | None]
"""The price of an item in effect at a moment, or None if it had none then."""


class VersionCheck(enum.Enum):
    """How an event's version relates to what the bill has applied."""

    NEXT = "next"  # apply it
    DUPLICATE = "duplicate"  # already applied: acknowledge and skip
    GAP = "gap"  # an earlier event is still on its way: try again later


@dataclass(slots=True)
class BillLine:
    """An item on the bill; `unpriced` items are billed at 0. `price_version` is the version
    of the item's price it was priced at (None when unpriced)."""

    quantity: int
    unit_price_cents: int
    unpriced: bool = False
    price_version: int | None = None

    @property
    def amount_cents(self) -> int:
        """Quantity times unit price."""
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True, slots=True)
class Invoice:
    """The bill of a checked-out cart, frozen."""

    invoice_id: str
    cart_id: str
    lines: dict[str, BillLine]
    total_cents: int
    issued_at: datetime


@dataclass(slots=True)
class Bill:
    """The running bill of one cart, as of its `last_version`-th event."""

    cart_id: str
    last_version: int = 0
    checked_out: bool = False
    lines: dict[str, BillLine] = field(default_factory=dict)

    @property
    def total_cents(self) -> int:
        """The sum of the lines' amounts."""
        return sum(line.amount_cents for line in self.lines.values())

    def check(self, version: int) -> VersionCheck:
        """Whether the event with `version` is the next one, a duplicate, or early."""
        if version <= self.last_version:
            return VersionCheck.DUPLICATE
        if version > self.last_version + 1:
            return VersionCheck.GAP
        return VersionCheck.NEXT

    def apply(self, event: CartEvent, version: int, price_of: PriceLookup) -> None:
        """Apply the next event; a line is priced whenever its quantity changes, at the price
        in effect at the event's timestamp."""
        if self.check(version) is not VersionCheck.NEXT:
            raise ValueError(
                f"cart {self.cart_id}: version {version} is not next after {self.last_version}"
            )
        match event:
            case ItemAdded(item_id=item_id, quantity=quantity, timestamp=at):
                held = self.lines[item_id].quantity if item_id in self.lines else 0
                self._set_line(item_id, held + quantity, price_of(item_id, at))
            case ItemRemoved(item_id=item_id, quantity=quantity, timestamp=at):
                held = self.lines[item_id].quantity if item_id in self.lines else 0
                self._set_line(item_id, held - quantity, price_of(item_id, at))
            case CartCheckedOut():
                self.checked_out = True
        self.last_version = version

    def _set_line(self, item_id: str, quantity: int, price: Price | None) -> None:
        if quantity <= 0:
            self.lines.pop(item_id, None)
            return
        if price is None:
            self.lines[item_id] = BillLine(quantity, 0, unpriced=True)
        else:
            self.lines[item_id] = BillLine(
                quantity, price.unit_price_cents, price_version=price.version
            )

    def invoice(self, issued_at: datetime) -> Invoice:
        """The invoice of this checked-out bill, issued at `issued_at` (the checkout's own
        time); its id is derived from the cart's, so it is the same however often it is
        computed."""
        lines = {item: replace(line) for item, line in self.lines.items()}
        return Invoice(f"inv-{self.cart_id}", self.cart_id, lines, self.total_cents, issued_at)
