"""Trust a JetStream "duplicate" acknowledgement only while the stream still holds the
message it names: its duplicate window outlives a purge or a deleted message."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.nats.connection import MSG_ID_HEADER


class DuplicateCheck:
    """Turns each duplicate result whose original is gone into an error, so the message stays
    to be published again (it goes through once the window has passed). Duplicates are rare
    (a publish repeated after a lost acknowledgement): each costs one message lookup."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._streams: dict[str, str] = {}  # topic -> the stream holding it

    async def confirmed(
        self, messages: Sequence[Message], results: list[PublishResult]
    ) -> list[PublishResult]:
        """`results`, each duplicate checked against the stream; the others unchanged."""
        if not any(result.duplicate for result in results):
            return results
        return list(
            await asyncio.gather(
                *(self._confirm(m, r) for m, r in zip(messages, results, strict=True))
            )
        )

    async def _confirm(self, message: Message, result: PublishResult) -> PublishResult:
        if not result.duplicate or result.sequence is None:
            return result
        try:
            stream = await self._stream_of(message.topic)
            stored = await self._js.get_msg(stream, result.sequence)
        except NotFoundError:
            stored = None
        except (TimeoutError, NatsError) as exc:
            return replace(result, error=f"cannot confirm the duplicate it was taken for: {exc!r}")
        if stored is not None and (stored.headers or {}).get(MSG_ID_HEADER) == message.id:
            return result
        return replace(
            result,
            error=(
                f"JetStream took it for a duplicate of sequence {result.sequence}, which it no "
                "longer holds (a purge or deletion within its duplicate window); it is stored "
                "once that window has passed"
            ),
        )

    async def _stream_of(self, topic: str) -> str:
        if topic not in self._streams:
            self._streams[topic] = await self._js.find_stream_name_by_subject(topic)
        return self._streams[topic]
