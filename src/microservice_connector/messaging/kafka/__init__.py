"""The Kafka adapter of the messaging port (DESIGN §3.3): keyed publisher, consumer group
subscriber committing only acked offsets, dead-letter topic; over aiokafka."""

from __future__ import annotations

from microservice_connector.messaging.kafka.connection import (
    KafkaConfig,
    KafkaUnavailable,
    check_reachable,
    ensure_topics,
    start_producer,
)
from microservice_connector.messaging.kafka.dead_letters import (
    DEAD_LETTER_TOPIC,
    KafkaDeadLetters,
)
from microservice_connector.messaging.kafka.publisher import KAFKA_FEATURES, KafkaPublisher
from microservice_connector.messaging.kafka.subscriber import KafkaSubscriber

__all__ = [
    "DEAD_LETTER_TOPIC",
    "KAFKA_FEATURES",
    "KafkaConfig",
    "KafkaDeadLetters",
    "KafkaPublisher",
    "KafkaSubscriber",
    "KafkaUnavailable",
    "check_reachable",
    "ensure_topics",
    "start_producer",
]
