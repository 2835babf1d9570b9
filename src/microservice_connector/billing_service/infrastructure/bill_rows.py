"""How bills and invoices sit in their rows: lines as JSON text, times in UTC; what the
unit of work writes and the reads decode, in one place."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from microservice_connector.billing_service.domain import Bill, BillLine


class _Line(msgspec.Struct):
    quantity: int
    unit_price_cents: int
    unpriced: bool = False
    price_version: int | None = None  # absent in lines written before prices were events


_encode = msgspec.json.Encoder().encode
_decode_lines = msgspec.json.Decoder(dict[str, _Line]).decode


def bill_of(cart_id: str, last_version: int, checked_out: bool, lines: str) -> Bill:
    """The bill a `bills` row holds."""
    return Bill(cart_id, last_version, bool(checked_out), lines_of(lines))


def lines_of(encoded: str) -> dict[str, BillLine]:
    """The bill or invoice lines of a row's `lines` column."""
    return {
        item: BillLine(line.quantity, line.unit_price_cents, line.unpriced, line.price_version)
        for item, line in _decode_lines(encoded).items()
    }


def encode_lines(lines: dict[str, BillLine]) -> str:
    """The `lines` column of a bill or invoice row."""
    return _encode(
        {
            item: _Line(line.quantity, line.unit_price_cents, line.unpriced, line.price_version)
            for item, line in lines.items()
        }
    ).decode()


def utc(moment: datetime) -> datetime:
    """A stored time in UTC; a naive one (SQLite gives them back so) is taken to be UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
