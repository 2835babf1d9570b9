"""Publishing to JetStream: pipelined, deduplicated by message id, one result per message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError

from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.nats.acks import AckBatch, AckInbox, NoStream, read_ack
from microservice_connector.messaging.nats.connection import MSG_ID_HEADER as MSG_ID_HEADER
from microservice_connector.messaging.nats.connection import client_of
from microservice_connector.messaging.nats.duplicates import DuplicateCheck
from microservice_connector.messaging.nats.wire import (
    BadHeaderName,
    header_block,
    send_hpub,
    write_now,
)
from microservice_connector.messaging.ports import Features

NATS_FEATURES = Features(
    persistent=True, ordered_per_key=True, broker_dedupe=True, gives_back_sent_ahead=True
)

DISCONNECTED = "disconnected from NATS"
# JetStream's answer to a message over its stream's `max_msg_size`: the message's own refusal.
STREAM_MESSAGE_TOO_LARGE = 10054


class NatsPublisher:
    """Publishes to JetStream with `Nats-Msg-Id` = message id, so a republished id within the
    stream's duplicate window is stored once. Many publishes are in flight at a time; each
    waits at most `ack_timeout` s for its acknowledgement. An error result means "not known
    to be stored" (it may still land, e.g. flushed after a reconnect): publish it again, the
    broker dedupes. A duplicate is acknowledged only while the stream holds the original
    (`DuplicateCheck`). While disconnected it fails fast instead of buffering."""

    def __init__(self, js: JetStreamContext, *, ack_timeout: float = 5.0) -> None:
        self._client = client_of(js)
        self._ack_timeout = ack_timeout
        self._closed = False
        self._duplicates = DuplicateCheck(js)
        self._acks = AckInbox.of(self._client)

    async def publish(self, messages: Sequence[Message]) -> list[PublishResult]:
        """One result per message, in order: the stream sequence and `duplicate`, or the error.
        Never raises for a message; returns within about `ack_timeout` s."""
        if not messages:
            return []
        if self._closed:
            return [PublishResult(m.id, error="the publisher is closed") for m in messages]
        try:
            batch = await self._acks.expect(len(messages))
        except Exception as exc:  # no reply subject (a closed or draining connection)
            reason = DISCONNECTED if not self._client.is_connected else _describe(exc)
            return [PublishResult(m.id, error=reason) for m in messages]
        try:
            unsent = await self._send_all(messages, batch)
            await batch.answered(within=self._ack_timeout)
        finally:
            self._acks.forget(batch)
        results = [
            unsent[index] if index in unsent else self._result(message, batch.answers[index])
            for index, message in enumerate(messages)
        ]
        return await self._duplicates.confirmed(messages, results)

    async def close(self) -> None:
        """Refuse further publishes; the connection, and its reply subject, belong to whoever
        opened it."""
        self._closed = True

    async def _send_all(
        self, messages: Sequence[Message], batch: AckBatch
    ) -> dict[int, PublishResult]:
        """Send each message with its reply subject, within one `ack_timeout` for them all;
        returns the failed result of each one not sent."""
        unsent: dict[int, PublishResult] = {}
        index = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._ack_timeout):
                for index, message in enumerate(messages):
                    failed = await self._send(message, batch.reply_to(index))
                    if failed is not None:
                        unsent[index] = failed
                index = len(messages)
        write_now(self._client)  # the batch leaves now, not on the flusher's next turn
        stalled = f"too many publishes in flight for {self._ack_timeout:g} s"
        unsent.update(
            {
                late: PublishResult(messages[late].id, error=stalled)
                for late in range(index, len(messages))
            }
        )
        for not_sent in unsent:
            batch.give_up(not_sent)
        return unsent

    async def _send(self, message: Message, reply_to: str) -> PublishResult | None:
        """Send `message`; None once it is on its way, else its failed result."""
        if not self._client.is_connected:
            # nats-py would buffer it until a reconnect, and leaks an in-flight slot when
            # that buffer is full.
            return PublishResult(message.id, error=DISCONNECTED)
        try:
            block = header_block({**message.headers, MSG_ID_HEADER: message.id})
        except BadHeaderName as exc:
            return PublishResult(message.id, error=_describe(exc), refused=True)
        size, limit = len(block) + len(message.payload), self._client.max_payload
        if size > limit:
            # The server would close the whole connection on it (nats-py checks the payload
            # alone); refused here, it fails this message only.
            too_large = f"{size} bytes with its headers, over the broker's max_payload of {limit}"
            return PublishResult(message.id, error=too_large, refused=True)
        try:
            await send_hpub(self._client, message.topic, reply_to, block, message.payload)
        except Exception as exc:  # one bad message (subject, closed connection) fails alone
            return PublishResult(message.id, error=_describe(exc))
        return None

    def _result(self, message: Message, answer: Msg | None) -> PublishResult:
        if answer is None:
            return PublishResult(
                message.id, error=f"no acknowledgement within {self._ack_timeout:g} s"
            )
        try:
            ack = read_ack(answer)
        except NoStream:
            return PublishResult(message.id, error=f"no stream holds subject {message.topic!r}")
        except (APIError, ValueError, KeyError, TypeError) as exc:
            too_large = isinstance(exc, APIError) and exc.err_code == STREAM_MESSAGE_TOO_LARGE
            return PublishResult(message.id, error=_describe(exc), refused=too_large)
        return PublishResult(message.id, sequence=ack.seq, duplicate=bool(ack.duplicate))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, APIError) and exc.description:
        return f"JetStream refused it: {exc.description} (code {exc.err_code})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
