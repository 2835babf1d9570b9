"""The registry: decodes each event by its own content type, upcasting old schema versions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from microservice_connector.events import (
    CartCheckedOut,
    EventDecodeError,
    EventRegistry,
    ItemAdded,
    RecordedEvent,
    codec_named,
    default_registry,
)
from support.evolution import ItemAddedV2, v2_registry

AT = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def stored(
    payload: msgspec.Struct,
    *,
    serializer: str = "json",
    event_type: str | None = None,
    schema_version: int = 1,
) -> RecordedEvent:
    codec = codec_named(serializer)  # type: ignore[arg-type]
    event_type = event_type or type(payload).__name__
    return RecordedEvent(
        position=1,
        event_id=str(uuid.uuid4()),
        aggregate_id="c",
        aggregate_type="ShoppingCart",
        version=1,
        event_type=event_type,
        schema_version=schema_version,
        content_type=codec.content_type,
        event_data=codec.encode(event_type, payload),
        timestamp=AT,
    )


@pytest.mark.parametrize("serializer", ["json", "protobuf"])
def test_events_decode_by_their_own_content_type(serializer: str) -> None:
    payload = ItemAdded("c", "item-001", 2, AT)
    assert default_registry().decode(stored(payload, serializer=serializer)) == payload


@pytest.mark.parametrize("serializer", ["json", "protobuf"])
def test_an_old_payload_is_upcast_to_the_current_class(serializer: str) -> None:
    old = stored(ItemAdded("c", "item-001", 2, AT), serializer=serializer)
    assert v2_registry().decode(old) == ItemAddedV2("c", "item-001", 2, AT, unit="piece")


def test_a_current_payload_is_decoded_as_it_is() -> None:
    new = stored(
        ItemAddedV2("c", "item-001", 2, AT, unit="kg"), event_type="ItemAdded", schema_version=2
    )
    assert v2_registry().decode(new) == ItemAddedV2("c", "item-001", 2, AT, unit="kg")


def test_upcasters_chain_one_version_at_a_time() -> None:
    class ItemAddedV3(ItemAddedV2, frozen=True):
        gift: bool = False

    registry = v2_registry()
    registry.register(ItemAddedV3, name="ItemAdded", version=3)
    registry.register_upcaster("ItemAdded", 2, lambda p: {**p, "gift": p["unit"] == "piece"})
    assert registry.decode(stored(ItemAdded("c", "i", 1, AT))) == ItemAddedV3(
        "c", "i", 1, AT, unit="piece", gift=True
    )
    assert registry.knows("ItemAdded", 1)
    assert registry.current_version("ItemAdded") == 3


def test_new_events_are_stored_under_their_class_s_own_name_and_version() -> None:
    registry = v2_registry()
    assert registry.name_and_version(ItemAdded("c", "i", 1, AT)) == ("ItemAdded", 1)
    assert registry.name_and_version(ItemAddedV2("c", "i", 1, AT)) == ("ItemAdded", 2)
    with pytest.raises(ValueError, match="not a registered event class"):
        registry.name_and_version(msgspec.Struct())


@pytest.mark.parametrize(
    ("event", "registry", "message"),
    [
        (
            stored(CartCheckedOut("c", AT), event_type="CartExploded"),
            default_registry(),
            "unknown event type 'CartExploded'",
        ),
        (
            stored(ItemAddedV2("c", "i", 1, AT), event_type="ItemAdded", schema_version=2),
            default_registry(),
            "schema version 2 is not one this reader knows",
        ),
        (stored(ItemAdded("c", "i", 1, AT)), None, "no upcaster from schema version 1 to 2"),
    ],
)
def test_what_cannot_be_read_is_refused_by_name(
    event: RecordedEvent, registry: EventRegistry | None, message: str
) -> None:
    if registry is None:  # v2 is current, but nobody said how to read v1
        registry = default_registry()
        registry.register(ItemAddedV2, name="ItemAdded", version=2)
    with pytest.raises(EventDecodeError, match=message):
        registry.decode(event)
    assert not registry.knows(event.event_type, event.schema_version)


def test_an_upcaster_that_fails_makes_the_event_malformed_not_a_crash() -> None:
    registry = default_registry()
    registry.register(ItemAddedV2, name="ItemAdded", version=2)
    registry.register_upcaster("ItemAdded", 1, lambda payload: payload["missing"])
    with pytest.raises(EventDecodeError, match="upcasting from schema version 1 failed"):
        registry.decode(stored(ItemAdded("c", "i", 1, AT)))


def test_an_unknown_content_type_is_refused() -> None:
    event = stored(ItemAdded("c", "i", 1, AT))
    odd = msgspec.structs.replace(event, content_type="text/csv")
    with pytest.raises(EventDecodeError, match="unsupported content type 'text/csv'"):
        default_registry().decode(odd)
