"""Publishing to Kafka: keyed by aggregate, `acks=all`, many in flight, one result each."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from microservice_connector.messaging.kafka.pipelined import publish_pipelined
from microservice_connector.messaging.kafka.records import record_headers, record_key, sequence_of
from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.ports import Features

# Kafka keeps messages (on a durable broker) and one key's order; it drops no duplicate id:
# consumers dedupe (billing's version gate does).
KAFKA_FEATURES = Features(persistent=True, ordered_per_key=True, broker_dedupe=False)


class KafkaPublisher:
    """Publishes each message to its topic, keyed by `Message.key` (the cart id), so one
    cart's events share a partition and keep their order. Everything is sent at once and
    each waits at most `ack_timeout` s for the broker's `acks=all`. An error result means
    "not known to be stored": publish it again; the consumer drops duplicates."""

    def __init__(self, producer: AIOKafkaProducer, *, ack_timeout: float = 5.0) -> None:
        self._producer = producer
        self._ack_timeout = ack_timeout
        self._closed = False

    async def publish(self, messages: Sequence[Message]) -> list[PublishResult]:
        """One result per message, in order: its sequence (partition and offset), or the
        error. Never raises for a message; returns within about `ack_timeout` s."""
        if not messages:
            return []
        if self._closed:
            return [PublishResult(m.id, error="the publisher is closed") for m in messages]
        return await publish_pipelined(
            messages,
            self._send,
            _result,
            ack_timeout=self._ack_timeout,
            stalled=f"no broker took it within {self._ack_timeout:g} s",
        )

    async def close(self) -> None:
        """Refuse further publishes; the producer belongs to whoever started it."""
        self._closed = True

    async def _send(self, message: Message) -> asyncio.Future[Any] | PublishResult:
        try:
            future: asyncio.Future[Any] = await self._producer.send(
                message.topic,
                message.payload,
                key=record_key(message),
                headers=record_headers(message),
            )
        except Exception as exc:  # one bad message (size, topic name) fails alone
            # Over the producer's `max_request_size`: this record alone, before any batch.
            refused = isinstance(exc, MessageSizeTooLargeError)
            return PublishResult(message.id, error=_describe(exc), refused=refused)
        return future


def _result(message: Message, outcome: asyncio.Future[Any], ack_timeout: float) -> PublishResult:
    if not outcome.done() or outcome.cancelled():
        return PublishResult(message.id, error=f"no acknowledgement within {ack_timeout:g} s")
    exc = outcome.exception()
    if exc is not None:  # a broker's error fails the whole batch the record went in
        return PublishResult(message.id, error=_describe(exc))
    metadata = outcome.result()
    return PublishResult(message.id, sequence=sequence_of(metadata.partition, metadata.offset))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
