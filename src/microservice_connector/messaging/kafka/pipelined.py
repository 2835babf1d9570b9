"""Publishing a batch with many messages in flight, one future per broker ack (NATS settles its
acks as they are read instead: `messaging.nats.acks`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from microservice_connector.messaging.message import Message, PublishResult

Ack = TypeVar("Ack")


async def publish_pipelined(
    messages: Sequence[Message],
    send: Callable[[Message], Awaitable[asyncio.Future[Ack] | PublishResult]],
    result: Callable[[Message, asyncio.Future[Ack], float], PublishResult],
    *,
    ack_timeout: float,
    stalled: str,
) -> list[PublishResult]:
    """Send every message (one deadline for the whole batch), wait up to `ack_timeout` for
    the acks, and return one result per message in order; `send` answers a future of the
    broker's ack, or the message's failed result when it could not send it. Never raises for
    a message; futures still pending at the end are cancelled, so none holds a client's
    in-flight slot."""
    sent: list[asyncio.Future[Ack] | PublishResult] = []
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ack_timeout):
                for message in messages:
                    sent.append(await send(message))
        sent += [PublishResult(late.id, error=stalled) for late in messages[len(sent) :]]
        futures = [outcome for outcome in sent if not isinstance(outcome, PublishResult)]
        if futures:
            await asyncio.wait(futures, timeout=ack_timeout)
        return [
            outcome if isinstance(outcome, PublishResult) else result(message, outcome, ack_timeout)
            for message, outcome in zip(messages, sent, strict=True)
        ]
    finally:
        for outcome in sent:
            if not isinstance(outcome, PublishResult) and not outcome.done():
                outcome.cancel()
