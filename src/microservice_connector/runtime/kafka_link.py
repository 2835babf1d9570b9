"""A service's link to Kafka: topics made, producer started in the background; subscribers
and dead letters handed out once it is up, and closed (committing what was acked) with it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from aiokafka import AIOKafkaProducer

from microservice_connector.messaging.kafka import (
    DEAD_LETTER_TOPIC,
    KafkaConfig,
    KafkaDeadLetters,
    KafkaPublisher,
    KafkaSubscriber,
    check_reachable,
    ensure_topics,
    start_producer,
)
from microservice_connector.messaging.kafka.holdings import KafkaHoldings
from microservice_connector.runtime.background import until_stopped
from microservice_connector.settings import Settings

log = logging.getLogger(__name__)

CART_TOPIC, BILLING_TOPIC = "cart.events", "billing.events"


def kafka_config(settings: Settings, *, client_id: str) -> KafkaConfig:
    """The client settings `MSC_KAFKA_*` describe."""
    password = settings.kafka_sasl_password
    return KafkaConfig(
        bootstrap=settings.kafka_bootstrap,
        client_id=client_id,
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=password.get_secret_value() if password is not None else None,
        ssl_cafile=settings.kafka_ssl_cafile,
        ssl_certfile=settings.kafka_ssl_certfile,
        ssl_keyfile=settings.kafka_ssl_keyfile,
        idempotence=settings.kafka_idempotence,
    )


def project_topics(partitions: int) -> dict[str, int]:
    """The topics of DESIGN §3.3 and their partition counts; dead letters keep one order."""
    return {CART_TOPIC: partitions, BILLING_TOPIC: partitions, DEAD_LETTER_TOPIC: 1}


class KafkaLink:
    """Creates the project's topics (if missing) and starts the shared producer, retrying with
    backoff; `ready()` waits for it. Subscribers it hands out are closed with it."""

    def __init__(
        self,
        config: KafkaConfig,
        *,
        topics: Mapping[str, int],
        replication_factor: int = 1,
        session_timeout_ms: int = 10_000,
    ) -> None:
        self.config = config
        self._topics = dict(topics)
        self._replication_factor = replication_factor
        self._session_timeout_ms = session_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._subscribers: list[KafkaSubscriber] = []
        self._ready = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings, *, name: str) -> KafkaLink:
        """The link `MSC_KAFKA_*` describe, for the service called `name`."""
        return cls(
            kafka_config(settings, client_id=name),
            topics=project_topics(settings.kafka_partitions),
            replication_factor=settings.kafka_replication_factor,
            session_timeout_ms=settings.kafka_session_timeout_ms,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Create the topics and start the producer, retrying until done or `stop` is set; a
        stop ends an attempt still waiting for a broker that does not answer."""
        delay = 0.1
        while not stop.is_set():
            try:
                producer = await until_stopped(self._connect(), stop)
            except Exception as exc:
                log.warning("%s not ready (%s); retrying", self.config.describe(), exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)
                continue
            if producer is None:
                return
            self._producer = producer
            self._ready.set()
            log.info("connected to %s", self.config.describe())
            return

    async def _connect(self) -> AIOKafkaProducer:
        await ensure_topics(self.config, self._topics, replication_factor=self._replication_factor)
        return await start_producer(self.config)

    async def check(self) -> None:
        """Raise unless a broker answers a metadata request now."""
        if self._producer is None:
            raise ConnectionError(f"not connected to {self.config.describe()}")
        await check_reachable(self._producer)

    async def ready(self) -> AIOKafkaProducer:
        """The started producer, once connected and the topics exist."""
        await self._ready.wait()
        assert self._producer is not None
        return self._producer

    async def publisher(self) -> KafkaPublisher:
        """A keyed, `acks=all` publisher on the shared producer."""
        return KafkaPublisher(await self.ready())

    async def holdings(self) -> KafkaHoldings:
        """The topics' end offsets (topics made again if the broker lost them)."""
        await self.ready()
        return KafkaHoldings(self.config, self._topics, replication_factor=self._replication_factor)

    async def subscriber(self, topic: str, group: str) -> KafkaSubscriber:
        """A member of consumer group `group` on `topic`, closed with the link."""
        await self.ready()
        subscriber = await KafkaSubscriber.create(
            self.config, topic=topic, group=group, session_timeout_ms=self._session_timeout_ms
        )
        self._subscribers.append(subscriber)
        return subscriber

    async def dead_letters(self) -> KafkaDeadLetters:
        """Dead letters on `deadletter.cart.events`."""
        return KafkaDeadLetters(self.config, await self.ready())

    async def close(self) -> None:
        """Commit what subscribers acked and leave their groups; flush and stop the producer."""
        for subscriber in self._subscribers:
            with contextlib.suppress(Exception):
                await subscriber.close()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 10.0)
