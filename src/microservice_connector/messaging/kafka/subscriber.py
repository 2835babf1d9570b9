"""Consuming from Kafka as a consumer group, committing only what was acked.

Kafka acknowledges by offset, per partition, not per message, and cannot redeliver one
message alone. So this subscriber keeps every delivery it handed out until it is settled:

* `ack()` marks it done. The offset committed for a partition is the lowest one still
  awaiting its ack (or one past the last delivered), so a commit never passes a message that
  was not acked, whatever order the acks come in. Commits go out at the next `fetch`,
  `pending` or `close`: after the handler returned, so after its transaction committed.
* `nak(delay)` keeps the message in a local retry buffer and delivers it again, attempt + 1,
  once `delay` has passed; the partition's commit stays below it meanwhile, while later
  messages of the partition keep flowing (as JetStream's redeliveries, they may overtake).
* A delivery not settled within `ack_wait` comes back the same way.
* When the group takes a partition away (a rebalance), what is unsettled on it is dropped
  here: its new owner reads it again from the committed offset. If this process dies, the
  same happens: what was acked but not yet committed is delivered once more, to be dropped
  by the consumer's own dedupe (billing's version gate).

`attempt` counts deliveries within this subscriber's life: after a restart or a rebalance a
message starts again at 1, since Kafka keeps no delivery count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from microservice_connector.messaging.kafka.connection import KafkaConfig, KafkaUnavailable
from microservice_connector.messaging.kafka.offsets import PartitionOffsets
from microservice_connector.messaging.kafka.records import message_of, sequence_of
from microservice_connector.messaging.message import Delivery, Message

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 5.0


@dataclass(slots=True)
class _Held:
    """A delivered message awaiting its settlement."""

    message: Message
    partition: int
    offset: int
    attempt: int
    due: float  # monotonic time at which it is delivered again unless settled


class KafkaSubscriber:
    """A member of consumer group `group` on `topic`: at-least-once, offsets committed only
    past acked messages; first deliveries come in partition order (one key's in publish
    order), redeliveries may overtake them. Not safe to share between tasks."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        topic: str,
        ack_wait: float,
        max_in_flight: int,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._ack_wait = ack_wait
        self._max_in_flight = max_in_flight
        self._held: dict[tuple[int, int], _Held] = {}
        self._offsets: dict[int, PartitionOffsets] = {}
        self._settled = asyncio.Event()
        self._committing = asyncio.Lock()  # one commit at a time, so none goes backwards
        self._closed = False

    @classmethod
    async def create(
        cls,
        config: KafkaConfig,
        *,
        topic: str,
        group: str,
        ack_wait: float = 30.0,
        max_in_flight: int = 1000,
        session_timeout_ms: int = 10_000,
    ) -> KafkaSubscriber:
        """Join `group` on `topic` (a new group starts at the earliest offset) and return once
        the group has assigned partitions; raises `KafkaUnavailable` if no broker answers."""
        consumer = AIOKafkaConsumer(
            **config.client_options(),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(100, session_timeout_ms // 4),
        )
        subscriber = cls(consumer, topic=topic, ack_wait=ack_wait, max_in_flight=max_in_flight)
        consumer.subscribe([topic], listener=_Rebalance(subscriber))
        try:
            await consumer.start()
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise KafkaUnavailable(f"cannot join group {group} on {config.describe()}") from exc
        return subscriber

    async def fetch(self, max_messages: int, wait: float) -> list[Delivery]:
        """Up to `max_messages` deliveries: redeliveries that are due first, then new records;
        waits at most `wait` s for the first, [] if none came (also while no broker answers)."""
        if self._closed:
            raise RuntimeError("fetch on a closed subscriber")
        await self._commit()
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            deliveries = self._redeliver(now, max_messages)
            room = min(max_messages - len(deliveries), self._max_in_flight - len(self._held))
            if room > 0:
                until = deadline if not deliveries else now
                timeout = max(0.0, min(until, self._next_due(deadline)) - now)
                batches = await self._consumer.getmany(
                    timeout_ms=int(timeout * 1000), max_records=room
                )
                deliveries += self._first_deliveries(batches, time.monotonic())
            if deliveries or time.monotonic() >= deadline:
                return deliveries
            if room <= 0:  # full: wait for a settlement or a redelivery to fall due
                self._settled.clear()
                timeout = self._next_due(deadline) - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._settled.wait(), max(0.0, timeout))

    async def pending(self) -> int:
        """Messages of `topic` past the group's committed offsets (after committing what was
        acked): what is undelivered, unacked, or acked behind an unacked one."""
        await self._commit()
        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        if not tps:
            return 0
        try:
            ends = await self._consumer.end_offsets(tps)
            starts = await self._consumer.beginning_offsets(tps)
            lag = 0
            for tp in tps:
                committed = await self._consumer.committed(tp)
                # Tansu 0.6 answers ListOffsets with its last batch's first offset + 1: the
                # high watermark of the last fetch, or what was delivered, may know better.
                seen = self._offsets.get(tp.partition)
                end = max(
                    ends[tp],
                    self._consumer.highwater(tp) or 0,
                    seen.next_offset if seen is not None else 0,
                )
                lag += end - (starts[tp] if committed is None else committed)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(f"cannot read the lag of {self._topic}: {exc!r}") from exc
        return int(lag)

    async def close(self) -> None:
        """Commit what was acked, leave the group and stop; unsettled messages go to whoever
        owns their partition next."""
        if self._closed:
            return
        self._closed = True
        await self._commit()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._consumer.stop(), COMMIT_TIMEOUT_S * 2)

    # --- inside -----------------------------------------------------------------------

    def _redeliver(self, now: float, limit: int) -> list[Delivery]:
        due = sorted(key for key, held in self._held.items() if held.due <= now)[:limit]
        deliveries = []
        for key in due:
            held = self._held[key]
            held.attempt += 1
            held.due = now + self._ack_wait
            deliveries.append(self._delivery(held))
        return deliveries

    def _first_deliveries(self, batches: dict[Any, list[Any]], now: float) -> list[Delivery]:
        deliveries = []
        for tp, records in batches.items():
            for record in records:
                offsets = self._offsets.get(tp.partition)
                if offsets is None or record.offset < offsets.next_offset:
                    # First record of the partition, or Kafka went back (a reset after the
                    # broker lost the topic): start afresh from here.
                    self._forget([tp.partition])
                    offsets = self._offsets[tp.partition] = PartitionOffsets(record.offset)
                offsets.delivered(record.offset)
                held = _Held(
                    message_of(record), tp.partition, record.offset, 1, now + self._ack_wait
                )
                self._held[(tp.partition, record.offset)] = held
                deliveries.append(self._delivery(held))
        return deliveries

    def _delivery(self, held: _Held) -> Delivery:
        key = (held.partition, held.offset)

        async def ack() -> None:
            if self._held.get(key) is held:
                del self._held[key]
                self._offsets[held.partition].acked(held.offset)
                self._settled.set()

        async def nak(delay: float) -> None:
            if self._held.get(key) is held:
                held.due = time.monotonic() + max(delay, 0.0)
                self._settled.set()

        return Delivery(
            held.message, held.attempt, sequence_of(held.partition, held.offset), ack, nak
        )

    def _next_due(self, default: float) -> float:
        return min((held.due for held in self._held.values()), default=default)

    def _forget(self, partitions: Collection[int]) -> None:
        """Drop what is held on `partitions`: their next owner reads it again."""
        for key in [key for key in self._held if key[0] in partitions]:
            del self._held[key]
        for partition in partitions:
            self._offsets.pop(partition, None)

    async def _commit(self, partitions: Collection[int] | None = None) -> None:
        """Commit each partition's commit point if it moved; a failed commit is retried next
        time (or made moot by a rebalance), never raised."""
        async with self._committing:
            await self._commit_now(partitions)

    async def _commit_now(self, partitions: Collection[int] | None) -> None:
        assigned = {tp.partition for tp in self._consumer.assignment()}
        wanted = assigned if partitions is None else assigned & set(partitions)
        points = {
            p: point
            for p in wanted
            if p in self._offsets and (point := self._offsets[p].to_commit()) is not None
        }
        if not points:
            return
        offsets = {TopicPartition(self._topic, p): point for p, point in points.items()}
        try:
            await asyncio.wait_for(self._consumer.commit(offsets), COMMIT_TIMEOUT_S)
        except (CommitFailedError, IllegalStateError) as exc:
            log.info("kafka: commit skipped, the group is rebalancing (%s)", exc)
            return
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("kafka: commit of %s failed (%r); retrying later", points, exc)
            return
        for partition, point in points.items():
            if partition in self._offsets:
                self._offsets[partition].committed = point

    async def on_revoked(self, revoked: Collection[Any]) -> None:
        """Before the group takes partitions away: commit what was acked on them, then drop
        what is held there."""
        partitions = [tp.partition for tp in revoked if tp.topic == self._topic]
        if not self._committing.locked():  # a commit in progress may wait on this rebalance
            await self._commit(partitions)
        self._forget(partitions)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands rebalance callbacks to the subscriber."""

    def __init__(self, subscriber: KafkaSubscriber) -> None:
        self._subscriber = subscriber

    async def on_partitions_revoked(self, revoked: Collection[Any]) -> None:
        if revoked:
            log.info("kafka: this member releases partitions %s to rebalance", _named(revoked))
        await self._subscriber.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[Any]) -> None:
        """Say what this member now holds; positions come from the committed offsets."""
        if assigned:
            log.info("kafka: the group assigns this member partitions %s", _named(assigned))
        else:  # more members than partitions: it waits for the next rebalance
            log.info("kafka: the group assigns this member no partition; it idles until one")


def _named(partitions: Collection[Any]) -> str:
    """`cart.events[0, 1]` for those partitions of that topic."""
    topics: dict[str, list[int]] = {}
    for tp in partitions:
        topics.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{topic}{sorted(numbers)}" for topic, numbers in sorted(topics.items()))
