"""The published event contract: an AsyncAPI 3.0 document generated from the event registries,
so every registered event type and schema version is in it and none can drift."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from microservice_connector import __version__
from microservice_connector.events.codec import JSON_CONTENT_TYPE
from microservice_connector.events.protobuf_codec import PROTOBUF_CONTENT_TYPE
from microservice_connector.events.registry import (
    EventRegistry,
    billing_registry,
    default_registry,
)

SCHEMAS = "#/components/schemas/"
# DESIGN §3.3: the headers every event carries on the wire, as strings.
EVENT_HEADERS: Mapping[str, str] = {
    "event-id": "The event's UUID; a consumer that saw it already drops the repeat.",
    "event-type": "The event type: names the payload's schema with `schema-version`.",
    "aggregate-id": "The cart (or invoice) the event belongs to; the Kafka message key.",
    "aggregate-type": "`ShoppingCart` or `Invoice`.",
    "aggregate-version": "1, 2, 3… per aggregate: a consumer applies only the next one.",
    "content-type": "The payload's codec.",
    "schema-version": "The payload's schema version (an integer, as a string).",
    "correlation-id": "The request that led to the event (`X-Correlation-ID`); may be empty.",
    "causation-id": "The message that caused the event; may be empty.",
    "occurred-at": "When the event happened: RFC 3339, UTC.",
}
# On every message published since it was added; older messages lack it.
FEED_HEADERS: Mapping[str, str] = {
    "position": "The event's place in its store's global feed (`GET /events`): billing's"
    " feed catch-up starts where these arrived without a hole.",
}
# Only on events stored while tracing was on (`microservice_connector.tracing`).
TRACE_HEADERS: Mapping[str, str] = {
    "traceparent": "W3C trace context of the span that published it (OpenTelemetry).",
    "tracestate": "W3C vendor trace state, when the trace has one.",
}
NATS_HEADERS: Mapping[str, str] = {
    "Nats-Msg-Id": "On NATS only: the event id, so JetStream drops a republished duplicate.",
}
DEAD_LETTER_HEADERS: Mapping[str, str] = {
    "error": "Why the consumer gave up on the message after its retries.",
    "failed-at": "When it gave up: RFC 3339, UTC.",
    "original-topic": "Where the message was consumed from (`cart.events`).",
}


@dataclass(frozen=True)
class Channel:
    """A topic (NATS subject, Kafka topic) and the events it carries."""

    key: str
    address: str
    description: str
    registry: EventRegistry
    dead_letters: bool = False


def channels() -> tuple[Channel, ...]:
    """The system's three topics, each with the registry of the events it carries."""
    cart = default_registry()
    return (
        Channel(
            "cartEvents",
            "cart.events",
            "Every event the cart service stores, published by its outbox relay in order per "
            "cart (JetStream stream `CART`; on Kafka keyed by cart id).",
            cart,
        ),
        Channel(
            "billingEvents",
            "billing.events",
            "Billing's own events, published through its outbox.",
            billing_registry(),
        ),
        Channel(
            "cartDeadLetters",
            "deadletter.cart.events",
            "Cart events billing could not process after its retries, with the original "
            "headers plus why and when; `msc deadletter replay` publishes one again.",
            cart,
            dead_letters=True,
        ),
    )


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `channels()`: servers, channels, operations, messages
    (one per event type, schema version and channel kind) and their payload schemas."""
    schemas: dict[str, Any] = {
        "EventHeaders": _headers_schema(
            {**EVENT_HEADERS, **FEED_HEADERS, **TRACE_HEADERS, **NATS_HEADERS}, EVENT_HEADERS
        ),
        "DeadLetterHeaders": _headers_schema(
            {
                **EVENT_HEADERS,
                **FEED_HEADERS,
                **TRACE_HEADERS,
                **NATS_HEADERS,
                **DEAD_LETTER_HEADERS,
            },
            {**EVENT_HEADERS, **DEAD_LETTER_HEADERS},
        ),
    }
    messages: dict[str, Any] = {}
    document_channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in channels():
        registered = channel.registry.registered()
        refs, components = msgspec.json.schema_components(
            [cls for _, _, cls in registered], ref_template=SCHEMAS + "{name}"
        )
        schemas.update(components)
        keys = []
        for (event_type, version, _), payload in zip(registered, refs, strict=True):
            key = f"{event_type}.v{version}" + (".deadLetter" if channel.dead_letters else "")
            messages[key] = _message(event_type, version, payload, channel.dead_letters)
            keys.append(key)
        document_channels[channel.key] = {
            "address": channel.address,
            "description": channel.description,
            "messages": {key: {"$ref": f"#/components/messages/{key}"} for key in keys},
        }
        operations.update(_operations(channel, keys))
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Microservice Connector events",
            "version": __version__,
            "description": "The messages the cart and billing services exchange through the "
            "broker: NATS JetStream or Kafka. Payloads are the stored event data, JSON by "
            f"default or Protobuf (`content-type: {PROTOBUF_CONTENT_TYPE}`, the schemas in "
            "`events/proto/`), with the same fields.",
        },
        "defaultContentType": JSON_CONTENT_TYPE,
        "servers": {
            "nats": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "NATS JetStream (`MSC_NATS_URL`), the default broker.",
            },
            "kafka": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "Kafka or a Kafka-compatible broker (`MSC_KAFKA_BOOTSTRAP`).",
            },
        },
        "channels": document_channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _headers_schema(described: Mapping[str, str], required: Mapping[str, str]) -> dict[str, Any]:
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in described.items()
    }
    properties["content-type"]["enum"] = [JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE]
    return {"type": "object", "properties": properties, "required": sorted(required)}


def _message(event_type: str, version: int, payload: Any, dead_letter: bool) -> dict[str, Any]:
    headers = "DeadLetterHeaders" if dead_letter else "EventHeaders"
    return {
        "name": event_type,
        "title": f"{event_type}, schema version {version}"
        + (", dead-lettered" if dead_letter else ""),
        "contentType": JSON_CONTENT_TYPE,
        "headers": {
            "allOf": [
                {"$ref": SCHEMAS + headers},
                {
                    "type": "object",
                    "properties": {
                        "event-type": {"const": event_type},
                        "schema-version": {"const": str(version)},
                    },
                },
            ]
        },
        "payload": payload,
    }


def _operations(channel: Channel, keys: list[str]) -> dict[str, Any]:
    """Who sends to and who receives from `channel`."""
    refs = [{"$ref": f"#/channels/{channel.key}/messages/{key}"} for key in keys]
    to = {"$ref": f"#/channels/{channel.key}"}
    if channel.dead_letters:
        return {
            "deadLetterCartEvent": {
                "action": "send",
                "channel": to,
                "summary": "Billing parks a cart event it cannot process.",
                "messages": refs,
            }
        }
    if channel.address == "cart.events":
        return {
            "publishCartEvent": {
                "action": "send",
                "channel": to,
                "summary": "The cart service's outbox relay publishes each stored event "
                "until the broker acknowledges it (at least once).",
                "messages": refs,
            },
            "consumeCartEvent": {
                "action": "receive",
                "channel": to,
                "summary": "Billing (durable consumer `billing`) applies each cart's events "
                "in version order, exactly once in effect.",
                "messages": refs,
            },
        }
    return {
        "publishBillingEvent": {
            "action": "send",
            "channel": to,
            "summary": "Billing's outbox relay publishes each invoice it issues.",
            "messages": refs,
        }
    }
