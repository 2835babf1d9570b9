"""A service's link to its broker, NATS or Kafka: what the composition roots ask of either."""

from __future__ import annotations

import asyncio
from typing import Protocol

from microservice_connector.messaging.holdings import BrokerHoldings
from microservice_connector.messaging.ports import DeadLetters, Publisher, Subscriber
from microservice_connector.settings import Settings


class Subscription(Subscriber, Protocol):
    """A durable subscriber that can also tell its lag."""

    async def pending(self) -> int:
        """Messages not yet delivered or not yet acked."""
        ...


class BrokerLink(Protocol):
    """Connects in the background (a service starts without its broker) and hands out the
    messaging port's parts once connected; `close()` settles and releases them all."""

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and make sure the topics/streams exist, retrying until done or `stop`."""
        ...

    async def check(self) -> None:
        """Raise unless the broker answers now (for `/readyz`)."""
        ...

    async def publisher(self) -> Publisher:
        """A publisher, once connected."""
        ...

    async def holdings(self) -> BrokerHoldings:
        """What the broker holds of each topic (for the relay's audit), once connected."""
        ...

    async def subscriber(self, topic: str, group: str) -> Subscription:
        """Durable consumer `group` of `topic`, once connected; raises if the broker went
        away meanwhile (try again)."""
        ...

    async def dead_letters(self) -> DeadLetters:
        """The dead-letter store, once connected."""
        ...

    async def close(self) -> None:
        """Commit or flush what was acked, then disconnect."""
        ...


def open_broker_link(settings: Settings, *, name: str) -> BrokerLink:
    """The link `settings.broker` names (`MSC_BROKER`), not yet connected: start `run`."""
    if settings.broker == "kafka":
        from microservice_connector.runtime.kafka_link import KafkaLink

        return KafkaLink.from_settings(settings, name=name)
    from microservice_connector.runtime.nats_link import NatsLink
    from microservice_connector.runtime.nats_options import nats_connect_options

    return NatsLink(
        settings.nats_servers(),
        name=name,
        options=nats_connect_options(settings),
        replicas=settings.nats_replicas,
    )
