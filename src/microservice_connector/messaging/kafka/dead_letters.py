"""Dead letters in a Kafka topic of one partition: listable and replayable.

Kafka cannot delete one record, so a replay appends a marker record naming the dead letter
it replayed; listing reads the topic from the start and leaves out what a marker names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from microservice_connector.messaging.kafka.connection import KafkaConfig, KafkaUnavailable
from microservice_connector.messaging.kafka.records import (
    MESSAGE_ID_HEADER,
    header_map,
    record_headers,
)
from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.ports import (
    DeadLetter,
    LetterTooLarge,
    Publisher,
    replayable,
)

DEAD_LETTER_TOPIC = "deadletter.cart.events"
ERROR_HEADER = "error"
FAILED_AT_HEADER = "failed-at"
ORIGINAL_TOPIC_HEADER = "original-topic"
ORIGINAL_ID_HEADER = "original-id"
ORIGINAL_KEY_HEADER = "original-key"
REPLAYED_HEADER = "replayed-sequence"  # on a marker: the dead letter it replayed
_ADDED_HEADERS = frozenset(
    {
        ERROR_HEADER,
        FAILED_AT_HEADER,
        ORIGINAL_TOPIC_HEADER,
        ORIGINAL_ID_HEADER,
        ORIGINAL_KEY_HEADER,
        MESSAGE_ID_HEADER,
    }
)
ERROR_MAX_CHARS = 1000
REPLAY_MARK = "#replay-"
READ_TIMEOUT_S = 10.0


class KafkaDeadLetters:
    """Dead letters on `topic` (one partition, so one order): each the original payload and
    headers plus `error`, `failed-at` and `original-topic`; `put` returns only once stored
    with `acks=all`. Sequences are the record offsets + 1."""

    def __init__(
        self,
        config: KafkaConfig,
        producer: AIOKafkaProducer,
        *,
        topic: str = DEAD_LETTER_TOPIC,
        ack_timeout: float = 5.0,
    ) -> None:
        self._config = config
        self._producer = producer
        self._topic = topic
        self._ack_timeout = ack_timeout

    async def put(self, message: Message, error: str) -> None:
        """Store `message` with why and when; raises `KafkaUnavailable` unless acked, so the
        caller can nak the original and lose nothing, `LetterTooLarge` if it is over the
        producer's or the broker's size limit."""
        added = {
            ERROR_HEADER: one_line(error),
            FAILED_AT_HEADER: utc_now(),
            ORIGINAL_TOPIC_HEADER: message.topic,
            ORIGINAL_ID_HEADER: message.id,
        }
        if message.key is not None:
            added[ORIGINAL_KEY_HEADER] = message.key
        await self._append(message.payload, record_headers(message, added))

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead letters not yet replayed."""
        letters = await self._read()
        return [*letters.values()][:limit]

    async def replay(self, sequence: int, publisher: Publisher) -> PublishResult:
        """Publish the original message again, under the id `<original id>#replay-<sequence>`,
        to its original topic, then mark it replayed; `KeyError` if there is no such dead
        letter (or it was replayed already)."""
        letter = (await self._read()).get(sequence)
        if letter is None:
            raise KeyError(f"no dead letter at sequence {sequence}")
        message = replayable(letter)
        again = replace(message, id=f"{message.id.split(REPLAY_MARK)[0]}{REPLAY_MARK}{sequence}")
        result = (await publisher.publish([again]))[0]
        if result.acknowledged:
            marker = [(REPLAYED_HEADER, str(sequence).encode())]
            try:
                await self._append(b"", marker)
            except KafkaUnavailable as exc:
                raise KafkaUnavailable(
                    f"replayed, but dead letter {sequence} was not marked: {exc}"
                ) from exc
        return result

    async def _append(self, payload: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        try:
            async with asyncio.timeout(self._ack_timeout):
                sent = await self._producer.send(self._topic, payload, headers=list(headers))
                await sent
        except MessageSizeTooLargeError as exc:
            raise LetterTooLarge(f"dead letter not stored: {exc!r}") from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(f"dead letter not stored: {exc!r}") from exc

    async def _read(self) -> dict[int, DeadLetter]:
        """Every dead letter not replayed, by sequence, oldest first."""
        tp = TopicPartition(self._topic, 0)
        consumer = AIOKafkaConsumer(**self._config.client_options(), enable_auto_commit=False)
        letters: dict[int, DeadLetter] = {}
        replayed: set[int] = set()
        seen: set[str] = set()
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                await consumer.start()
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                end = (await consumer.end_offsets([tp]))[tp]
                while True:
                    batches = await consumer.getmany(tp, timeout_ms=200)
                    for record in batches.get(tp, []):
                        _take(record, letters, replayed, seen)
                    # Tansu 0.6 may answer ListOffsets short of the end (its last batch's
                    # first offset + 1): the high watermark of a fetch knows better.
                    high = consumer.highwater(tp)
                    if await consumer.position(tp) >= max(end, high or 0) and (
                        high is not None or not batches
                    ):
                        break
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(f"cannot read {self._topic}: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        return {seq: letter for seq, letter in letters.items() if seq not in replayed}


def _take(record: Any, letters: dict[int, DeadLetter], replayed: set[int], seen: set[str]) -> None:
    """Add `record` to `letters` (or `replayed`, for a marker). A dead letter whose original id
    was already read is a put repeated after a lost ack: Kafka has no dedupe, so it is
    skipped here."""
    stored = header_map(record.headers)
    sequence = record.offset + 1
    if REPLAYED_HEADER in stored:
        with contextlib.suppress(ValueError):
            replayed.add(int(stored[REPLAYED_HEADER]))
        return
    original_id = stored.get(ORIGINAL_ID_HEADER)
    if original_id is not None:
        if original_id in seen:
            return
        seen.add(original_id)
    original = {name: value for name, value in stored.items() if name not in _ADDED_HEADERS}
    message = Message(
        id=stored.get(ORIGINAL_ID_HEADER) or stored.get("event-id") or f"deadletter-{sequence}",
        topic=stored.get(ORIGINAL_TOPIC_HEADER, ""),
        payload=record.value or b"",
        headers=original,
        key=stored.get(ORIGINAL_KEY_HEADER),
    )
    error, failed_at = stored.get(ERROR_HEADER, ""), stored.get(FAILED_AT_HEADER, "")
    letters[sequence] = DeadLetter(sequence, message, error, failed_at)


def one_line(error: str) -> str:
    """`error` on one line, at most `ERROR_MAX_CHARS` characters."""
    text = " ".join(error.split())
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 3] + "..."


def utc_now() -> str:
    """Now, RFC 3339 in UTC with a `Z`."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
