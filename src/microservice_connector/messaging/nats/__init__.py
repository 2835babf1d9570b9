"""The NATS JetStream adapter of the messaging port (DESIGN §3.3): connection, streams,
publisher, durable pull subscriber and dead letters."""

from __future__ import annotations

from microservice_connector.messaging.nats.connection import (
    PROJECT_STREAMS,
    BrokerRefusedCredentials,
    BrokerUnavailable,
    connect_nats,
    ensure_stream,
)
from microservice_connector.messaging.nats.dead_letters import NatsDeadLetters
from microservice_connector.messaging.nats.publisher import NATS_FEATURES, NatsPublisher
from microservice_connector.messaging.nats.subscriber import NatsSubscriber

__all__ = [
    "NATS_FEATURES",
    "PROJECT_STREAMS",
    "BrokerRefusedCredentials",
    "BrokerUnavailable",
    "NatsDeadLetters",
    "NatsPublisher",
    "NatsSubscriber",
    "connect_nats",
    "ensure_stream",
]
