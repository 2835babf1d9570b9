"""JSON and Protobuf codecs: every event survives both, and both read back the same shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microservice_connector.events import (
    JSON_CONTENT_TYPE,
    PROTOBUF_CONTENT_TYPE,
    CartCheckedOut,
    Codec,
    EventDecodeError,
    EventEncodeError,
    ItemAdded,
    ItemRemoved,
    codec_named,
)
from microservice_connector.events.billing import InvoiceIssued, InvoiceLine, PriceChanged

JSON, PROTOBUF = codec_named("json"), codec_named("protobuf")
AT = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)

ids = st.text(alphabet="abcxyz0123456789-._:", min_size=1, max_size=64)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)
quantities = st.integers(0, 10**12)
lines = st.builds(
    InvoiceLine, quantities, quantities, quantities, st.booleans()
)  # zero values too: proto3 leaves them off the wire
payloads = st.one_of(
    st.builds(ItemAdded, ids, ids, quantities, moments),
    st.builds(ItemRemoved, ids, ids, quantities, moments),
    st.builds(CartCheckedOut, ids, moments),
    st.builds(
        InvoiceIssued, ids, ids, st.dictionaries(ids, lines, max_size=4), quantities, moments
    ),
    st.builds(PriceChanged, ids, quantities, quantities, moments),
)


def test_the_codecs_are_named_by_content_type() -> None:
    assert (JSON.content_type, PROTOBUF.content_type) == (
        JSON_CONTENT_TYPE,
        PROTOBUF_CONTENT_TYPE,
    )
    assert PROTOBUF_CONTENT_TYPE == "application/x-protobuf"


@given(payloads)
def test_every_event_round_trips_through_both_codecs(payload: msgspec.Struct) -> None:
    event_type = type(payload).__name__
    for codec in (JSON, PROTOBUF):
        data = codec.encode(event_type, payload)
        assert codec.decode(event_type, data, type(payload)) == payload


@given(payloads)
def test_both_codecs_read_back_the_same_json_shape(payload: msgspec.Struct) -> None:
    """So a reader (the HTTP feed, `msc events list`, an upcaster) need not care which wrote it."""
    event_type = type(payload).__name__
    from_json = JSON.to_builtins(event_type, JSON.encode(event_type, payload))
    from_protobuf = PROTOBUF.to_builtins(event_type, PROTOBUF.encode(event_type, payload))
    assert from_protobuf == from_json == msgspec.to_builtins(payload)


def test_protobuf_keeps_the_instant_of_a_non_utc_timestamp_in_utc() -> None:
    local = AT.astimezone(timezone(timedelta(hours=2)))
    data = PROTOBUF.encode("CartCheckedOut", CartCheckedOut("c", local))
    decoded = PROTOBUF.decode("CartCheckedOut", data, CartCheckedOut)
    assert decoded.timestamp == AT
    assert decoded.timestamp.utcoffset() == timedelta(0)


def test_protobuf_is_much_smaller_than_json() -> None:
    payload = ItemAdded("cart-123", "item-001", 2, AT)
    json_size = len(JSON.encode("ItemAdded", payload))
    protobuf_size = len(PROTOBUF.encode("ItemAdded", payload))
    assert protobuf_size <= 0.4 * json_size, (protobuf_size, json_size)


class ItemAddedWithUnit(ItemAdded, frozen=True):
    unit: str = "piece"


def test_a_payload_the_proto_does_not_describe_is_refused_on_encoding() -> None:
    with pytest.raises(EventEncodeError, match="no field 'unit'"):
        PROTOBUF.encode("ItemAdded", ItemAddedWithUnit("c", "i", 1, AT, "kg"))
    with pytest.raises(EventEncodeError, match="no Protobuf message for event type 'Nope'"):
        PROTOBUF.encode("Nope", CartCheckedOut("c", AT))


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (JSON, b"\x00\xffnot json"),
        (JSON, b"[1, 2]"),
        (JSON, b'{"cart_id": "c"}'),
        (PROTOBUF, b"\xff\xff\xff"),
        (PROTOBUF, b'{"cart_id": "c"}'),
    ],
)
def test_garbage_is_a_decode_error_never_a_crash(codec: Codec, data: bytes) -> None:
    with pytest.raises(EventDecodeError):
        codec.decode("ItemAdded", data, ItemAdded)


@pytest.mark.parametrize(
    ("codec", "data"),
    [(JSON, b"\x00\xffnot json"), (JSON, b"[1, 2]"), (PROTOBUF, b"\xff\xff\xff")],
)
def test_unreadable_payloads_have_no_json_shape(codec: Codec, data: bytes) -> None:
    with pytest.raises(EventDecodeError):
        codec.to_builtins("ItemAdded", data)
