"""A `Message` as a Kafka record and back: key, headers, and the message id as a header."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from microservice_connector.messaging.message import Message

# Kafka has no message id of its own; the id travels as a header (the event id for events).
MESSAGE_ID_HEADER = "message-id"
# Sequences are unique across partitions: partition * STRIDE + offset + 1 (so they start at 1).
PARTITION_STRIDE = 10**12

Header = tuple[str, bytes]


def record_headers(message: Message, extra: Mapping[str, str] | None = None) -> list[Header]:
    """The message's headers, its id and `extra`, as Kafka record headers (UTF-8)."""
    headers = {**message.headers, **(extra or {}), MESSAGE_ID_HEADER: message.id}
    return [(name, value.encode()) for name, value in headers.items()]


def record_key(message: Message) -> bytes | None:
    """The partitioning key: one cart's events share a key, so one partition and its order."""
    return None if message.key is None else message.key.encode()


def header_map(raw: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Record headers as text; a value that is not UTF-8 is replaced, never raised on."""
    return {name: (value or b"").decode("utf-8", errors="replace") for name, value in raw or ()}


def sequence_of(partition: int, offset: int) -> int:
    """The `Delivery.sequence` / `PublishResult.sequence` of a record."""
    return partition * PARTITION_STRIDE + offset + 1


def message_of(record: Any) -> Message:
    """The `Message` a consumed record carries; the id header is taken out of the headers."""
    headers = header_map(record.headers)
    fallback = f"kafka-{record.topic}-{record.partition}-{record.offset}"
    message_id = headers.pop(MESSAGE_ID_HEADER, None) or headers.get("event-id") or fallback
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    return Message(message_id, record.topic, record.value or b"", headers, key)
