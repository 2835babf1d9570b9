"""An in-memory broker for unit tests: JetStream's delivery rules on one asyncio loop, no I/O.

Topics are append-only logs with sequence numbers from 1; a message whose id the topic
stored within the dedupe window is dropped as a duplicate; durable consumers keep their
cursor by name, redeliver what is not acked after `ack_wait`, and redeliver a nak'd message
after its delay with `attempt` one higher. Use one broker per event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from microservice_connector.messaging.message import Delivery, Message, PublishResult
from microservice_connector.messaging.ports import DeadLetter, Features, Publisher, replayable

MEMORY_FEATURES = Features(persistent=False, ordered_per_key=True, broker_dedupe=True)

_ERROR_MAX_CHARS = 1000


@dataclass(frozen=True, slots=True)
class _Stored:
    sequence: int
    message: Message


@dataclass(slots=True)
class _Unacked:
    stored: _Stored
    attempt: int
    due: float  # monotonic time at which it is delivered again unless acked


class _Consumer:
    """A durable consumer's state: the next first delivery, and what awaits an ack."""

    def __init__(self, ack_wait: float, max_ack_pending: int) -> None:
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self.cursor = 0  # index into the topic's log of the next first delivery
        self.unacked: dict[int, _Unacked] = {}

    def next_due(self) -> float | None:
        return min((entry.due for entry in self.unacked.values()), default=None)


class InMemoryBroker:
    """Topics, dedupe window, durable consumers and dead letters; lives as long as the object."""

    def __init__(self, *, duplicate_window: float = 120.0) -> None:
        self.duplicate_window = duplicate_window
        self._logs: dict[str, list[_Stored]] = {}
        self._seen: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._consumers: dict[tuple[str, str], _Consumer] = {}
        self._dead_letters: dict[int, DeadLetter] = {}
        self._last_dead_letter = 0
        self._changed = asyncio.Event()

    def append(self, message: Message) -> PublishResult:
        """Store `message` at the end of its topic, unless its id is already in the window."""
        now = time.monotonic()
        self._forget_ids_before(now - self.duplicate_window)
        key = (message.topic, message.id)
        seen = self._seen.get(key)
        if seen is not None:
            return PublishResult(message.id, sequence=seen[0], duplicate=True)
        log = self._logs.setdefault(message.topic, [])
        stored = _Stored(len(log) + 1, message)
        log.append(stored)
        self._seen[key] = (stored.sequence, now)
        self._notify()
        return PublishResult(message.id, sequence=stored.sequence)

    def messages(self, topic: str) -> list[Message]:
        """Everything stored on `topic`, in sequence order."""
        return [stored.message for stored in self._logs.get(topic, [])]

    async def take(
        self, topic: str, durable: str, max_messages: int, wait: float
    ) -> list[Delivery]:
        """Up to `max_messages` deliveries for the durable consumer, waiting up to `wait` s."""
        consumer = self._consumers[(topic, durable)]
        deadline = time.monotonic() + wait
        while True:
            deliveries = self._deliver(topic, consumer, max_messages)
            if deliveries:
                return deliveries
            now = time.monotonic()
            if now >= deadline:
                return []
            due = consumer.next_due()
            wake = deadline if due is None else min(deadline, due)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=max(wake - now, 0.0))

    def consumer(self, topic: str, durable: str, ack_wait: float, max_ack_pending: int) -> None:
        """Create the durable consumer, or update its settings if it exists."""
        existing = self._consumers.get((topic, durable))
        if existing is None:
            self._consumers[(topic, durable)] = _Consumer(ack_wait, max_ack_pending)
        else:
            existing.ack_wait, existing.max_ack_pending = ack_wait, max_ack_pending

    def pending(self, topic: str, durable: str) -> int:
        """Messages not yet delivered plus deliveries not yet acked: the consumer's lag."""
        consumer = self._consumers[(topic, durable)]
        return len(self._logs.get(topic, [])) - consumer.cursor + len(consumer.unacked)

    def put_dead_letter(self, message: Message, error: str) -> DeadLetter:
        """Keep `message` as a dead letter with a one-line `error` and the time, in order; a
        message put again under the same id (its first put's answer was lost) is kept once."""
        for kept in self._dead_letters.values():
            if kept.message.id == message.id:
                return kept
        self._last_dead_letter += 1
        letter = DeadLetter(self._last_dead_letter, message, _one_line(error), _utc_now())
        self._dead_letters[letter.sequence] = letter
        return letter

    def dead_letters(self, limit: int) -> list[DeadLetter]:
        """The oldest `limit` dead letters."""
        return [self._dead_letters[seq] for seq in sorted(self._dead_letters)[:limit]]

    def dead_letter(self, sequence: int) -> DeadLetter:
        """The dead letter at `sequence`; `KeyError` if there is none."""
        try:
            return self._dead_letters[sequence]
        except KeyError:
            raise KeyError(f"no dead letter at sequence {sequence}") from None

    def forget_dead_letter(self, sequence: int) -> None:
        """Remove the dead letter at `sequence`, if present."""
        self._dead_letters.pop(sequence, None)

    def _deliver(self, topic: str, consumer: _Consumer, max_messages: int) -> list[Delivery]:
        now = time.monotonic()
        due = sorted(seq for seq, entry in consumer.unacked.items() if entry.due <= now)
        deliveries: list[Delivery] = []
        for seq in due[:max_messages]:
            entry = consumer.unacked[seq]
            entry.attempt += 1
            entry.due = now + consumer.ack_wait
            deliveries.append(self._delivery(consumer, entry))
        log = self._logs.get(topic, [])
        while (
            len(deliveries) < max_messages
            and consumer.cursor < len(log)
            and len(consumer.unacked) < consumer.max_ack_pending
        ):
            stored = log[consumer.cursor]
            consumer.cursor += 1
            entry = _Unacked(stored, attempt=1, due=now + consumer.ack_wait)
            consumer.unacked[stored.sequence] = entry
            deliveries.append(self._delivery(consumer, entry))
        return deliveries

    def _delivery(self, consumer: _Consumer, entry: _Unacked) -> Delivery:
        sequence = entry.stored.sequence

        async def ack() -> None:
            if consumer.unacked.pop(sequence, None) is not None:
                self._notify()

        async def nak(delay: float) -> None:
            pending = consumer.unacked.get(sequence)
            if pending is not None:
                pending.due = time.monotonic() + max(delay, 0.0)
                self._notify()

        return Delivery(entry.stored.message, entry.attempt, sequence, ack, nak)

    def _forget_ids_before(self, horizon: float) -> None:
        while self._seen:
            key, (_, stored_at) = next(iter(self._seen.items()))
            if stored_at >= horizon:
                return
            del self._seen[key]

    def _notify(self) -> None:
        # Wake every waiting fetch; each re-checks its own consumer.
        self._changed.set()
        self._changed = asyncio.Event()


class InMemoryPublisher:
    """Publishes to an `InMemoryBroker`; every message is acknowledged at once, in order."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker

    async def publish(self, messages: Sequence[Message]) -> list[PublishResult]:
        """One result per message, in order; a repeated id within the window is a duplicate."""
        return [self._broker.append(message) for message in messages]

    async def close(self) -> None:
        """Nothing is ever pending."""


class InMemorySubscriber:
    """A durable consumer of one topic: unacked deliveries come back after `ack_wait` s."""

    def __init__(
        self,
        broker: InMemoryBroker,
        topic: str,
        durable: str,
        *,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
    ) -> None:
        self._broker = broker
        self._topic = topic
        self._durable = durable
        self._closed = False
        broker.consumer(topic, durable, ack_wait, max_ack_pending)

    async def fetch(self, max_messages: int, wait: float) -> list[Delivery]:
        """Redeliveries that are due first, then new messages in order; [] after `wait` s."""
        if self._closed:
            raise RuntimeError("fetch on a closed subscriber")
        return await self._broker.take(self._topic, self._durable, max_messages, wait)

    async def pending(self) -> int:
        """Messages not yet delivered plus deliveries not yet acked."""
        return self._broker.pending(self._topic, self._durable)

    async def close(self) -> None:
        """Stop fetching; the durable consumer and its unacked deliveries stay in the broker."""
        self._closed = True


class InMemoryDeadLetters:
    """Dead letters kept in an `InMemoryBroker`, in the order they were put."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker

    async def put(self, message: Message, error: str) -> None:
        """Keep `message` with `error` (one line, at most 1000 chars) and the time."""
        self._broker.put_dead_letter(message, error)

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest `limit` dead letters."""
        return self._broker.dead_letters(limit)

    async def replay(self, sequence: int, publisher: Publisher) -> PublishResult:
        """Publish the original message again under the id `<original>#replay-<sequence>`
        (so the broker does not drop it as a duplicate of the original), and forget it once
        acked; `KeyError` if there is no such dead letter."""
        message = replayable(self._broker.dead_letter(sequence))
        base = message.id.split(_REPLAY_MARK)[0]
        again = replace(message, id=f"{base}{_REPLAY_MARK}{sequence}")
        result = (await publisher.publish([again]))[0]
        if result.acknowledged:
            self._broker.forget_dead_letter(sequence)
        return result


_REPLAY_MARK = "#replay-"


def _one_line(error: str) -> str:
    """`error` on one line, at most `_ERROR_MAX_CHARS` characters."""
    text = " ".join(error.split())
    return text if len(text) <= _ERROR_MAX_CHARS else text[: _ERROR_MAX_CHARS - 3] + "..."


def _utc_now() -> str:
    """Now, RFC 3339 in UTC with a `Z`."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
