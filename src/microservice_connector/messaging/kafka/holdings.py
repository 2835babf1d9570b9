"""What Kafka holds of a topic: each partition's last record, as a publish sequence."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from microservice_connector.messaging.holdings import Holding
from microservice_connector.messaging.kafka.connection import (
    KafkaConfig,
    KafkaUnavailable,
    ensure_topics,
)
from microservice_connector.messaging.kafka.records import PARTITION_STRIDE, sequence_of

READ_LAST_S = 2.0


class KafkaHoldings:
    """The `BrokerHoldings` of Kafka: one log per partition. Topics (`topics`: name ->
    partitions) are created again, with `replication_factor` copies, if the broker lost them
    (Tansu restarted empty). Kafka names no creation time, so a recreated topic shows only
    by its offsets."""

    def __init__(
        self, config: KafkaConfig, topics: Mapping[str, int], *, replication_factor: int = 1
    ) -> None:
        self._config = config
        self._topics = dict(topics)
        self._replication_factor = replication_factor

    async def holdings(self, topic: str) -> list[Holding]:
        """Per partition of `topic`: the sequence of its last record (`first - 1`: none)."""
        await ensure_topics(
            self._config,
            {topic: self._topics[topic]},
            replication_factor=self._replication_factor,
        )
        consumer = AIOKafkaConsumer(**self._config.client_options(), enable_auto_commit=False)
        try:
            await consumer.start()
            await consumer.topics()  # a metadata request: partitions_for_topic reads its answer
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            lasts = await _last_offsets(consumer, partitions)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(f"cannot read the last offsets of {topic}: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        return [
            Holding(
                first=sequence_of(part.partition, 0),
                limit=sequence_of(part.partition, PARTITION_STRIDE - 1),
                last=sequence_of(part.partition, last),
            )
            for part, last in sorted(lasts.items(), key=lambda item: item[0].partition)
        ]


async def _last_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offset of each partition's last record (-1: empty). Read, not taken from the end
    offset alone: Tansu answers the end offset of its last batch's first record, so the
    records of that batch are fetched from there."""
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    lasts = {part: end - 1 for part, end in ends.items()}
    waiting = {part for part, end in ends.items() if end > 0}
    if not waiting:
        return lasts
    consumer.assign(list(waiting))
    for part in waiting:
        consumer.seek(part, ends[part] - 1)
    deadline = time.monotonic() + READ_LAST_S
    while waiting and time.monotonic() < deadline:
        batches = await consumer.getmany(*waiting, timeout_ms=200, max_records=10_000)
        for part, records in batches.items():
            lasts[part] = max(lasts[part], *(record.offset for record in records))
            if records:
                waiting.discard(part)
    return lasts
