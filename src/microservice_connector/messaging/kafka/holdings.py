"""What Kafka holds of a topic: each partition's end offset, as publish sequences."""

from __future__ import annotations

import contextlib
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


class KafkaHoldings:
    """The `BrokerHoldings` of Kafka: one log per partition. Topics (`topics`: name ->
    partitions) are created again, with `replication_factor` copies, if the broker lost them
    (Tansu restarted empty). Kafka names no creation time, so a recreated topic shows only
    by its end offsets."""

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
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        except (KafkaError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(f"cannot read the end offsets of {topic}: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
        return [
            Holding(
                first=sequence_of(part.partition, 0),
                limit=sequence_of(part.partition, PARTITION_STRIDE - 1),
                last=sequence_of(part.partition, end - 1),
            )
            for part, end in sorted(ends.items(), key=lambda item: item[0].partition)
        ]
