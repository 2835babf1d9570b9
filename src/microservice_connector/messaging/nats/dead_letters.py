"""Dead letters in a JetStream stream: `deadletter.<topic>`, listable and replayable."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from email.header import decode_header
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.nats.connection import BrokerUnavailable, client_of
from microservice_connector.messaging.nats.publisher import MSG_ID_HEADER
from microservice_connector.messaging.nats.wire import header_block
from microservice_connector.messaging.ports import (
    DeadLetter,
    LetterTooLarge,
    Publisher,
    replayable,
)

SUBJECT_PREFIX = "deadletter."
ERROR_HEADER = "error"
FAILED_AT_HEADER = "failed-at"
ORIGINAL_TOPIC_HEADER = "original-topic"
ORIGINAL_ID_HEADER = "original-id"
ORIGINAL_KEY_HEADER = "original-key"
_ADDED_HEADERS = frozenset(
    {
        ERROR_HEADER,
        FAILED_AT_HEADER,
        ORIGINAL_TOPIC_HEADER,
        ORIGINAL_ID_HEADER,
        ORIGINAL_KEY_HEADER,
        MSG_ID_HEADER,
    }
)
ERROR_MAX_CHARS = 1000
REPLAY_MARK = "#replay-"
DEAD_LETTER_ID_PREFIX = "deadletter-"


class NatsDeadLetters:
    """Dead letters kept in the `stream` (subjects `deadletter.>`), each with the original
    headers plus `error`, `failed-at` and `original-topic`; `put` returns only once stored."""

    def __init__(
        self, js: JetStreamContext, *, stream: str = "DEADLETTER", ack_timeout: float = 5.0
    ) -> None:
        self._js = js
        self._client = client_of(js)
        self._stream = stream
        self._ack_timeout = ack_timeout

    async def put(self, message: Message, error: str) -> None:
        """Store `message` on `deadletter.<topic>`; raises `BrokerUnavailable` unless acked,
        so the caller can nak the original and lose nothing. Stored under its own message id,
        so a put repeated after a lost ack is kept once (within the stream's dedupe window)."""
        headers = {name: value for name, value in message.headers.items() if name != MSG_ID_HEADER}
        headers |= {
            MSG_ID_HEADER: DEAD_LETTER_ID_PREFIX + message.id,
            ERROR_HEADER: one_line(error),
            FAILED_AT_HEADER: utc_now(),
            ORIGINAL_TOPIC_HEADER: message.topic,
            ORIGINAL_ID_HEADER: message.id,
        }
        if message.key is not None:
            headers[ORIGINAL_KEY_HEADER] = message.key
        if not self._client.is_connected:
            raise BrokerUnavailable("disconnected from NATS; dead letter not stored")
        # The server counts headers and payload against max_payload and drops the connection
        # of a client that sends more; nats-py checks the payload alone.
        size = len(message.payload) + len(header_block(headers))
        if size > self._client.max_payload:
            raise LetterTooLarge(
                f"dead letter not stored: {size} bytes with its headers, over the server's "
                f"max_payload of {self._client.max_payload}"
            )
        try:
            await self._js.publish(
                SUBJECT_PREFIX + message.topic,
                message.payload,
                timeout=self._ack_timeout,
                headers=headers,
            )
        except (TimeoutError, NatsError) as exc:
            raise BrokerUnavailable(f"dead letter not stored: {exc!r}") from exc

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead letters, in stream order."""
        letters: list[DeadLetter] = []
        sequence = 1
        while len(letters) < limit:
            try:
                raw = await self._js.get_msg(self._stream, sequence, subject=">", next=True)
            except NotFoundError:
                break
            except (TimeoutError, NatsError) as exc:
                raise BrokerUnavailable(f"cannot read {self._stream}: {exc!r}") from exc
            letters.append(dead_letter(raw))
            sequence = (raw.seq or sequence) + 1
        return letters

    async def replay(self, sequence: int, publisher: Publisher) -> PublishResult:
        """Publish the original message (topic, payload, headers) again under the id
        `replay_id(original id, sequence)`, and delete the dead letter once acked. Replaying
        one dead letter twice is deduped; `KeyError` if there is no such dead letter."""
        try:
            raw = await self._js.get_msg(self._stream, sequence)
        except NotFoundError:
            raise KeyError(f"no dead letter at sequence {sequence}") from None
        except (TimeoutError, NatsError) as exc:
            raise BrokerUnavailable(f"cannot read {self._stream}: {exc!r}") from exc
        message = replayable(dead_letter(raw))
        again = replace(message, id=replay_id(message.id, sequence))
        result = (await publisher.publish([again]))[0]
        if result.acknowledged:
            try:
                await self._js.delete_msg(self._stream, sequence)
            except (TimeoutError, NatsError) as exc:
                raise BrokerUnavailable(
                    f"replayed, but dead letter {sequence} was not deleted: {exc!r}"
                ) from exc
        return result


def replay_id(message_id: str, sequence: int) -> str:
    """The id a replay of dead letter `sequence` is published under: its own, so the broker
    does not drop it as a duplicate of the original, and the same on every replay of it."""
    return f"{message_id.split(REPLAY_MARK)[0]}{REPLAY_MARK}{sequence}"


def dead_letter(raw: RawStreamMsg) -> DeadLetter:
    """The `DeadLetter` a stored `deadletter.<topic>` message holds."""
    stored = {str(name): header_text(value) for name, value in (raw.headers or {}).items()}
    sequence = raw.seq or 0
    subject = raw.subject or ""
    topic = stored.get(ORIGINAL_TOPIC_HEADER) or subject.removeprefix(SUBJECT_PREFIX)
    original = {name: value for name, value in stored.items() if name not in _ADDED_HEADERS}
    message = Message(
        id=stored.get(ORIGINAL_ID_HEADER) or stored.get("event-id") or f"deadletter-{sequence}",
        topic=topic,
        payload=raw.data or b"",
        headers=original,
        key=stored.get(ORIGINAL_KEY_HEADER),
    )
    return DeadLetter(
        sequence=sequence,
        message=message,
        error=stored.get(ERROR_HEADER, ""),
        failed_at=stored.get(FAILED_AT_HEADER, ""),
    )


def header_text(value: Any) -> str:
    """A header value as text: `get_msg` parses headers as e-mail, so non-ASCII values come
    back as `email.header.Header` objects of raw UTF-8 bytes."""
    if isinstance(value, str):
        return value
    parts = decode_header(value)
    return "".join(
        part.decode("utf-8", errors="replace") if isinstance(part, bytes) else part
        for part, _ in parts
    )


def one_line(error: str) -> str:
    """`error` on one line, at most `ERROR_MAX_CHARS` characters."""
    text = " ".join(error.split())
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 3] + "..."


def utc_now() -> str:
    """Now, RFC 3339 in UTC with a `Z`."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
