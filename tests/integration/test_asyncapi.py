"""The AsyncAPI document: valid against the official AsyncAPI 3.0 JSON Schema (a copy under
tests/asyncapi/), complete for every registered event type and schema version, in step with
the headers and topics the code really uses, and served by the cart service and `msc`."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft7Validator
from typer.testing import CliRunner

from microservice_connector.billing_service.infrastructure.sql_repository import BILLING_TOPIC
from microservice_connector.cart_service.main import CART_TOPIC, build_cart_app
from microservice_connector.cli import app as msc
from microservice_connector.events.asyncapi import (
    DEAD_LETTER_HEADERS,
    EVENT_HEADERS,
    FEED_HEADERS,
    NATS_HEADERS,
    TRACE_HEADERS,
    asyncapi_document,
)
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.events.registry import (
    EventRegistry,
    billing_registry,
    default_registry,
)
from microservice_connector.eventstore.outbox_rows import message_headers
from microservice_connector.messaging.kafka.dead_letters import DEAD_LETTER_TOPIC
from microservice_connector.messaging.nats import dead_letters as nats_dead_letters
from microservice_connector.messaging.nats.publisher import MSG_ID_HEADER
from microservice_connector.settings import Settings
from microservice_connector.tracing import TRACE_HEADERS as TRACE_HEADER_NAMES

OFFICIAL = Path(__file__).parents[1] / "asyncapi" / "3.0.0.json"


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = json.loads(OFFICIAL.read_text())
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


def test_the_document_is_valid_asyncapi_3(
    validator: Draft7Validator, document: dict[str, Any]
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"


def test_the_validator_rejects_what_asyncapi_3_does_not_allow(
    validator: Draft7Validator, document: dict[str, Any]
) -> None:
    """The check above can fail: version 2's `publish` action, or a channel without its
    messages' map shape, are refused."""
    old_style = copy.deepcopy(document)
    old_style["operations"]["publishCartEvent"]["action"] = "publish"
    assert not validator.is_valid(old_style)
    broken = copy.deepcopy(document)
    broken["channels"]["cartEvents"]["messages"] = ["ItemAdded"]
    assert not validator.is_valid(broken)


@pytest.mark.parametrize(
    ("channel", "registry", "suffix"),
    [
        ("cartEvents", default_registry(), ""),
        ("billingEvents", billing_registry(), ""),
        ("cartDeadLetters", default_registry(), ".deadLetter"),
    ],
)
def test_every_registered_event_and_version_is_in_its_channel(
    document: dict[str, Any], channel: str, registry: EventRegistry, suffix: str
) -> None:
    registered = registry.registered()
    assert registered, "the registry holds no events"
    messages = document["components"]["messages"]
    listed = document["channels"][channel]["messages"]
    for event_type, version, cls in registered:
        key = f"{event_type}.v{version}{suffix}"
        assert listed[key] == {"$ref": f"#/components/messages/{key}"}
        message = messages[key]
        assert message["name"] == event_type
        constants = message["headers"]["allOf"][1]["properties"]
        assert constants == {
            "event-type": {"const": event_type},
            "schema-version": {"const": str(version)},
        }
        schema = _resolve(document, message["payload"])
        fields = {f.encode_name for f in msgspec.structs.fields(cls)}
        assert set(schema["properties"]) == fields, key
    assert len(listed) == len(registered)


def test_a_newly_registered_version_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    class ItemAddedV2(msgspec.Struct, frozen=True):
        """ItemAdded with the price the cart saw."""

        cart_id: str
        item_id: str
        quantity: int
        unit_price_cents: int
        timestamp: datetime

    def with_v2() -> EventRegistry:
        registry = default_registry()
        registry.register(ItemAddedV2, name="ItemAdded", version=2)
        return registry

    monkeypatch.setattr("microservice_connector.events.asyncapi.default_registry", with_v2)
    document = asyncapi_document()
    listed = document["channels"]["cartEvents"]["messages"]
    assert {"ItemAdded.v1", "ItemAdded.v2"} <= set(listed)
    payload = _resolve(document, document["components"]["messages"]["ItemAdded.v2"]["payload"])
    assert "unit_price_cents" in payload["properties"]


def test_the_headers_are_the_ones_on_the_wire(document: dict[str, Any]) -> None:
    event = RecordedEvent(
        event_id="e-1",
        aggregate_id="c-1",
        aggregate_type="ShoppingCart",
        version=1,
        position=1,
        event_type="ItemAdded",
        schema_version=1,
        content_type="application/json",
        event_data=b"{}",
        timestamp=datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert {*EVENT_HEADERS, *FEED_HEADERS} == set(message_headers(event))
    traced = msgspec.structs.replace(event, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert set(message_headers(traced)) - {*EVENT_HEADERS, *FEED_HEADERS} == {"traceparent"}
    assert set(TRACE_HEADERS) == set(TRACE_HEADER_NAMES)
    assert set(NATS_HEADERS) == {MSG_ID_HEADER}
    assert {
        nats_dead_letters.ERROR_HEADER,
        nats_dead_letters.FAILED_AT_HEADER,
        nats_dead_letters.ORIGINAL_TOPIC_HEADER,
    } == set(DEAD_LETTER_HEADERS)
    headers = document["components"]["schemas"]["EventHeaders"]
    assert set(headers["required"]) == set(EVENT_HEADERS)


def test_the_channels_are_the_topics_the_services_use(document: dict[str, Any]) -> None:
    addresses = {key: channel["address"] for key, channel in document["channels"].items()}
    assert addresses == {
        "cartEvents": CART_TOPIC,
        "billingEvents": BILLING_TOPIC,
        "cartDeadLetters": DEAD_LETTER_TOPIC,
    }


def test_the_cart_service_and_msc_serve_the_same_document(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    with TestClient(build_cart_app(Settings(data_dir=tmp_path), relay=False)) as client:
        served = client.get("/asyncapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert served.json() == document
    printed = CliRunner().invoke(msc, ["asyncapi"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == document
    written = tmp_path / "asyncapi.json"
    assert CliRunner().invoke(msc, ["asyncapi", "--output", str(written)]).exit_code == 0
    assert json.loads(written.read_text()) == document


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = document
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found
