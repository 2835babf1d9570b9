"""The two interfaces every broker adapter implements, and the features it declares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from microservice_connector.messaging.message import Delivery, Message, PublishResult


@dataclass(frozen=True, slots=True)
class Features:
    """What an adapter guarantees, so the contract suite knows what to expect of it."""

    persistent: bool  # messages survive a restart of the consumer (and of the broker)
    ordered_per_key: bool  # first deliveries of one key arrive in publish order
    broker_dedupe: bool  # the broker drops a message whose id it has already stored
    # A closing subscriber gives back what the broker sent it ahead and it did not hand out,
    # which counts as a delivery: the next consumer may see that message as attempt 2.
    gives_back_sent_ahead: bool = False


class Publisher(Protocol):
    """Publishes messages; a result says, per message, whether the broker acknowledged it."""

    async def publish(self, messages: Sequence[Message]) -> list[PublishResult]:
        """Publish all of `messages` concurrently, in order; never raises for one message."""
        ...

    async def close(self) -> None:
        """Wait for pending acknowledgements, then release the connection."""
        ...


class Subscriber(Protocol):
    """A durable consumer: what is fetched and not acked is delivered again."""

    async def fetch(self, max_messages: int, wait: float) -> list[Delivery]:
        """Up to `max_messages` deliveries, waiting at most `wait` s for the first."""
        ...

    async def close(self) -> None:
        """Stop consuming; unacked deliveries will be redelivered to the next consumer."""
        ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a consumer gave up on: the original, why, and when (RFC 3339)."""

    sequence: int
    message: Message
    error: str
    failed_at: str


# On a dead letter kept without its payload (too large for the store): the payload's size.
PAYLOAD_DROPPED_HEADER = "payload-dropped-bytes"


class LetterTooLarge(Exception):
    """The dead-letter store refuses a letter for its size: stored again as it is, it would
    be refused again (`DeadLetters.put`)."""


def without_payload(message: Message) -> Message:
    """`message` as a dead letter keeps it when whole it is too large: its id, topic, key and
    headers, no payload, and the payload's size in `PAYLOAD_DROPPED_HEADER`."""
    headers = {**message.headers, PAYLOAD_DROPPED_HEADER: str(len(message.payload))}
    return replace(message, payload=b"", headers=headers)


async def put_dead_letter(dead_letters: DeadLetters, message: Message, error: str) -> str:
    """Store `message` in `dead_letters` with `error`, or, if the store refuses it for its
    size, without its payload (else it would be retried for good, holding back what follows
    it); the error it was stored with. Raises what the store raised otherwise."""
    try:
        await dead_letters.put(message, error)
    except LetterTooLarge:
        error = f"{error}; its payload ({len(message.payload)} bytes) was too large to keep here"
        await dead_letters.put(without_payload(message), error)
    return error


def replayable(letter: DeadLetter) -> Message:
    """The message a replay of `letter` publishes; `KeyError` if the letter kept no payload,
    whose replay would only publish a husk."""
    dropped = letter.message.headers.get(PAYLOAD_DROPPED_HEADER)
    if dropped is not None:
        raise KeyError(
            f"dead letter {letter.sequence} kept no payload (its {dropped} bytes were too "
            "large for the dead-letter store): it cannot be replayed"
        )
    return letter.message


class DeadLetters(Protocol):
    """Where poison messages go: kept with the error, listable, and replayable."""

    async def put(self, message: Message, error: str) -> None:
        """Store `message` with its original headers plus `error` and `failed-at`; durable.
        `LetterTooLarge` if the store refuses it for its size."""
        ...

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead letters."""
        ...

    async def replay(self, sequence: int, publisher: Publisher) -> PublishResult:
        """Publish the dead letter again to its original topic, then forget it once acked."""
        ...
