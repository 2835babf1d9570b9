"""The billing service's HTTP API (DESIGN §3.4): bills, invoices, prices, health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from microservice_connector.billing_service.application import ConcurrentBillUpdate
from microservice_connector.billing_service.domain import BillLine
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.web.errors import ERROR_RESPONSES, install_error_handlers
from microservice_connector.web.health import Check, health_router
from microservice_connector.web.ids import id_path
from microservice_connector.web.numbers import INTEGRAL
from microservice_connector.web.server import lifespan

CartId = Annotated[str, id_path("the cart's id")]
ItemId = Annotated[str, id_path("the item's id")]
MAX_PRICE_CENTS = 100_000_000


class NotFound(LookupError):
    """Nothing is known under that id yet."""


class Line(BaseModel):
    """One priced item, at version `price_version` of its price (None when unpriced)."""

    quantity: int
    unit_price_cents: int
    amount_cents: int
    unpriced: bool
    price_version: int | None

    @classmethod
    def of(cls, line: BillLine) -> Line:
        """The API shape of a bill line."""
        return cls(
            quantity=line.quantity,
            unit_price_cents=line.unit_price_cents,
            amount_cents=line.amount_cents,
            unpriced=line.unpriced,
            price_version=line.price_version,
        )


class BillOut(BaseModel):
    """A cart's running bill."""

    cart_id: str
    last_version: int
    checked_out: bool
    lines: dict[str, Line]
    total_cents: int


class InvoiceOut(BaseModel):
    """An issued invoice."""

    invoice_id: str
    cart_id: str
    lines: dict[str, Line]
    total_cents: int
    issued_at: datetime


class PriceIn(BaseModel):
    """`PUT /prices/{item_id}`."""

    model_config = ConfigDict(extra="forbid")

    unit_price_cents: Annotated[int, Field(strict=True, ge=0, le=MAX_PRICE_CENTS), INTEGRAL]


class PriceOut(BaseModel):
    """One item's price, the `version`-th it has had."""

    item_id: str
    unit_price_cents: int
    version: int


Lifecycle = Callable[[], Awaitable[None]]


def create_billing_app(
    repository: SqlBillingRepository,
    *,
    checks: Mapping[str, Check],
    on_startup: Lifecycle | None = None,
    on_shutdown: Lifecycle | None = None,
) -> FastAPI:
    """The billing API; `on_startup`/`on_shutdown` start and stop the consumer and relay."""

    app = FastAPI(
        title="Billing service",
        version="1",
        lifespan=lifespan(on_startup, on_shutdown),
        responses=ERROR_RESPONSES,
    )
    install_error_handlers(app, {NotFound: 404, ConcurrentBillUpdate: 409})
    app.include_router(health_router(checks))

    @app.get("/billing/carts/{cart_id}", response_model=BillOut)
    async def get_bill(cart_id: CartId) -> BillOut:
        """The cart's running bill; 404 before its first event reaches billing."""
        bill = await asyncio.to_thread(repository.bill, cart_id)
        if bill is None:
            raise NotFound(f"billing has seen no event of cart {cart_id}")
        return BillOut(
            cart_id=bill.cart_id,
            last_version=bill.last_version,
            checked_out=bill.checked_out,
            lines={item: Line.of(line) for item, line in bill.lines.items()},
            total_cents=bill.total_cents,
        )

    @app.get("/invoices/{cart_id}", response_model=InvoiceOut)
    async def get_invoice(cart_id: CartId) -> InvoiceOut:
        """The cart's invoice; 404 until billing has applied its checkout."""
        invoice = await asyncio.to_thread(repository.invoice, cart_id)
        if invoice is None:
            raise NotFound(f"no invoice for cart {cart_id} (yet)")
        return InvoiceOut(
            invoice_id=invoice.invoice_id,
            cart_id=invoice.cart_id,
            lines={item: Line.of(line) for item, line in invoice.lines.items()},
            total_cents=invoice.total_cents,
            issued_at=invoice.issued_at,
        )

    @app.get("/prices", response_model=list[PriceOut])
    async def list_prices() -> list[PriceOut]:
        """The price list."""
        found = await asyncio.to_thread(repository.prices)
        return [
            PriceOut(item_id=item, unit_price_cents=price.unit_price_cents, version=price.version)
            for item, price in found.items()
        ]

    @app.put("/prices/{item_id}", response_model=PriceOut)
    async def set_price(item_id: ItemId, body: PriceIn) -> PriceOut:
        """Set one item's price, in effect from now (a `PriceChanged` event): a bill line
        takes it when its quantity next changes, by a cart event from this moment on."""
        price = await asyncio.to_thread(repository.set_price, item_id, body.unit_price_cents)
        return PriceOut(
            item_id=item_id, unit_price_cents=price.unit_price_cents, version=price.version
        )

    return app
