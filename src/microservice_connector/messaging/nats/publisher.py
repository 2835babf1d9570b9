"""Publishing to JetStream: pipelined, deduplicated by message id, one result per message."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError

from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.nats.connection import MSG_ID_HEADER as MSG_ID_HEADER
from microservice_connector.messaging.nats.connection import client_of
from microservice_connector.messaging.nats.duplicates import DuplicateCheck
from microservice_connector.messaging.pipelined import publish_pipelined
from microservice_connector.messaging.ports import Features

NATS_FEATURES = Features(persistent=True, ordered_per_key=True, broker_dedupe=True)

DISCONNECTED = "disconnected from NATS"


class NatsPublisher:
    """Publishes to JetStream with `Nats-Msg-Id` = message id, so a republished id within the
    stream's duplicate window is stored once. Many publishes are in flight at a time; each
    waits at most `ack_timeout` s for its acknowledgement. An error result means "not known
    to be stored" (it may still land, e.g. flushed after a reconnect): publish it again, the
    broker dedupes. A duplicate is acknowledged only while the stream holds the original
    (`DuplicateCheck`). While disconnected it fails fast instead of buffering."""

    def __init__(self, js: JetStreamContext, *, ack_timeout: float = 5.0) -> None:
        self._js = js
        self._client = client_of(js)
        self._ack_timeout = ack_timeout
        self._closed = False
        self._duplicates = DuplicateCheck(js)

    async def publish(self, messages: Sequence[Message]) -> list[PublishResult]:
        """One result per message, in order: the stream sequence and `duplicate`, or the error.
        Never raises for a message; returns within about `ack_timeout` s."""
        if not messages:
            return []
        if self._closed:
            return [PublishResult(m.id, error="the publisher is closed") for m in messages]
        results = await publish_pipelined(
            messages,
            self._send,
            _result,
            ack_timeout=self._ack_timeout,
            stalled=f"too many publishes in flight for {self._ack_timeout:g} s",
        )
        return await self._duplicates.confirmed(messages, results)

    async def close(self) -> None:
        """Refuse further publishes; the connection belongs to whoever opened it."""
        self._closed = True

    async def _send(self, message: Message) -> asyncio.Future[PubAck] | str:
        if not self._client.is_connected:
            # nats-py would buffer it until a reconnect, and leaks an in-flight slot when
            # that buffer is full.
            return DISCONNECTED
        headers = {**message.headers, MSG_ID_HEADER: message.id}
        try:
            return await self._js.publish_async(message.topic, message.payload, headers=headers)
        except Exception as exc:  # one bad message (header, size, closed connection) fails alone
            return _describe(exc)


def _result(
    message: Message, outcome: asyncio.Future[PubAck] | str, ack_timeout: float
) -> PublishResult:
    if isinstance(outcome, str):
        return PublishResult(message.id, error=outcome)
    if not outcome.done() or outcome.cancelled():
        return PublishResult(message.id, error=f"no acknowledgement within {ack_timeout:g} s")
    exc = outcome.exception()
    if exc is not None:
        if isinstance(exc, NoStreamResponseError):
            return PublishResult(message.id, error=f"no stream holds subject {message.topic!r}")
        return PublishResult(message.id, error=_describe(exc))
    ack = outcome.result()
    return PublishResult(message.id, sequence=ack.seq, duplicate=bool(ack.duplicate))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, APIError) and exc.description:
        return f"JetStream refused it: {exc.description} (code {exc.err_code})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
