"""The messaging contract (DESIGN §3.3, §4): every broker adapter keeps the same promises.

One story, told to the in-memory broker, a real `nats-server` and a real Tansu (Kafka) alike:
a message is published and acknowledged with its sequence, delivered intact to a durable
consumer, and delivered again until it is acked — at once after an ack wait, later after a
nak — while a republished id is stored once. A consumer that comes back resumes after its
last ack, and a message nobody can process becomes a dead letter that can be listed and
replayed. Each adapter declares its `Features`; a test of a feature runs where the adapter
claims it.
NATS alone is then taken away and brought back: nothing hangs, nothing raises that should
not, and the same connection carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest
from aiokafka import AIOKafkaProducer
from nats.aio.client import Client
from nats.js import JetStreamContext

from microservice_connector.messaging import (
    DeadLetters,
    Delivery,
    Features,
    Message,
    Publisher,
    PublishResult,
    Subscriber,
)
from microservice_connector.messaging.kafka import (
    DEAD_LETTER_TOPIC,
    KAFKA_FEATURES,
    KafkaConfig,
    KafkaDeadLetters,
    KafkaPublisher,
    KafkaSubscriber,
    ensure_topics,
    start_producer,
)
from microservice_connector.messaging.memory import (
    MEMORY_FEATURES,
    InMemoryBroker,
    InMemoryDeadLetters,
    InMemoryPublisher,
    InMemorySubscriber,
)
from microservice_connector.messaging.middleware import dead_letter
from microservice_connector.messaging.nats import (
    NATS_FEATURES,
    BrokerRefusedCredentials,
    BrokerUnavailable,
    NatsDeadLetters,
    NatsPublisher,
    NatsSubscriber,
    connect_nats,
    ensure_stream,
)
from microservice_connector.messaging.ports import PAYLOAD_DROPPED_HEADER
from microservice_connector.messaging.settlement import Ack, Reject, Settlement
from support.nats import NatsServer
from support.tansu import TansuServer

TOPIC = "cart.events"
ACK_WAIT = 0.5  # short, so redelivery after an ack wait is quick to see
NAK_DELAY = 0.4
PATIENCE = 10.0  # how long a test waits for something that should happen

_ids = itertools.count(1)


# --- the story's vocabulary -------------------------------------------------------------


def event(extra_headers: Mapping[str, str] | None = None) -> Message:
    """A cart event as the outbox relay publishes it: id, envelope headers, JSON payload."""
    n = next(_ids)
    event_id = f"evt-{n:06d}-{time.monotonic_ns()}"
    headers = {
        "event-id": event_id,
        "event-type": "ItemAdded",
        "aggregate-id": "cart-1",
        "aggregate-version": str(n),
        "content-type": "application/json",
        "correlation-id": "",
        **(extra_headers or {}),
    }
    payload = b'{"cart_id":"cart-1","item_id":"item-%03d","quantity":2}' % n
    return Message(event_id, TOPIC, payload, headers, key="cart-1")


def events(count: int) -> list[Message]:
    return [event() for _ in range(count)]


def ids(items: Sequence[Message | Delivery | PublishResult]) -> list[str]:
    out = []
    for item in items:
        if isinstance(item, Delivery):
            out.append(item.message.id)
        elif isinstance(item, PublishResult):
            out.append(item.message_id)
        else:
            out.append(item.id)
    return out


async def receive(subscriber: Subscriber, count: int) -> list[Delivery]:
    """Fetch until `count` deliveries arrived; fail after `PATIENCE` s."""
    got: list[Delivery] = []
    deadline = time.monotonic() + PATIENCE
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(got)} of {count} deliveries in {PATIENCE:g} s")
        got += await subscriber.fetch(count - len(got), wait=min(remaining, 1.0))
    return got


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `PATIENCE` s."""
    deadline = time.monotonic() + PATIENCE
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {PATIENCE:g} s waiting for {what}")
        await asyncio.sleep(0.05)


class Consumer(Subscriber, Protocol):
    """A subscriber that can also tell its lag."""

    async def pending(self) -> int: ...


# --- the adapters under test ------------------------------------------------------------


class Adapter(Protocol):
    """One broker adapter: how to make its parts, and what it promises."""

    features: Features

    async def publisher(self) -> Publisher: ...

    async def subscriber(self, durable: str = ..., *, ack_wait: float = ...) -> Consumer: ...

    async def dead_letters(self) -> DeadLetters: ...

    async def restart_broker(self) -> None: ...


@dataclass
class MemoryAdapter:
    broker: InMemoryBroker = field(default_factory=InMemoryBroker)
    features: Features = MEMORY_FEATURES

    async def publisher(self) -> Publisher:
        return InMemoryPublisher(self.broker)

    async def subscriber(self, durable: str = "billing", *, ack_wait: float = 30.0) -> Consumer:
        return InMemorySubscriber(self.broker, TOPIC, durable, ack_wait=ack_wait)

    async def dead_letters(self) -> DeadLetters:
        return InMemoryDeadLetters(self.broker)

    async def restart_broker(self) -> None:
        raise NotImplementedError("an in-memory broker does not survive a restart")


@dataclass
class NatsAdapter:
    server: NatsServer
    client: Client
    js: JetStreamContext
    features: Features = NATS_FEATURES

    async def publisher(self) -> Publisher:
        return NatsPublisher(self.js, ack_timeout=2.0)

    async def subscriber(self, durable: str = "billing", *, ack_wait: float = 30.0) -> Consumer:
        return await NatsSubscriber.create(
            self.js, stream="CART", subject=TOPIC, durable=durable, ack_wait=ack_wait
        )

    async def dead_letters(self) -> DeadLetters:
        return NatsDeadLetters(self.js)

    async def restart_broker(self) -> None:
        self.server.kill()
        self.server.start()


# Tansu delays a group join by about half the session timeout: keep it short here.
KAFKA_SESSION_TIMEOUT_MS = 1000
# Tansu keeps everything in memory: a broker restart loses it (a real cluster would not).
TANSU_FEATURES = replace(KAFKA_FEATURES, persistent=False)


@dataclass
class KafkaAdapter:
    server: TansuServer
    config: KafkaConfig
    producer: AIOKafkaProducer
    features: Features = TANSU_FEATURES
    opened: list[Subscriber] = field(default_factory=list)

    async def publisher(self) -> Publisher:
        return KafkaPublisher(self.producer, ack_timeout=2.0)

    async def subscriber(self, durable: str = "billing", *, ack_wait: float = 30.0) -> Consumer:
        subscriber = await KafkaSubscriber.create(
            self.config,
            topic=TOPIC,
            group=durable,
            ack_wait=ack_wait,
            session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
        )
        self.opened.append(subscriber)
        return subscriber

    async def dead_letters(self) -> DeadLetters:
        return KafkaDeadLetters(self.config, self.producer)

    async def restart_broker(self) -> None:
        raise NotImplementedError("Tansu keeps nothing across a restart")

    async def close(self) -> None:
        for subscriber in self.opened:
            await subscriber.close()
        await self.producer.stop()


async def kafka_adapter(server: TansuServer) -> KafkaAdapter:
    config = KafkaConfig(server.bootstrap, client_id="contract-test")
    # Several partitions, so that keyed order and per-partition offsets are really tested.
    await ensure_topics(config, {TOPIC: 3, DEAD_LETTER_TOPIC: 1})
    return KafkaAdapter(server, config, await start_producer(config))


async def nats_adapter(server: NatsServer) -> NatsAdapter:
    client = await connect_nats([server.url], name="contract-test", reconnect_time_wait=0.1)
    js = client.jetstream()
    await ensure_stream(js, "CART", [TOPIC])
    await ensure_stream(js, "DEADLETTER", ["deadletter.>"])
    return NatsAdapter(server, client, js)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
async def adapter(request: pytest.FixtureRequest) -> AsyncIterator[Adapter]:
    """Every broker adapter, on a broker of its own."""
    if request.param == "memory":
        yield MemoryAdapter()
        return
    if request.param == "kafka":
        kafka = await kafka_adapter(request.getfixturevalue("tansu_server"))
        try:
            yield kafka
        finally:
            await kafka.close()
        return
    nats = await nats_adapter(request.getfixturevalue("nats_server"))
    try:
        yield nats
    finally:
        await nats.client.close()


@pytest.fixture
async def nats(nats_server: NatsServer) -> AsyncIterator[NatsAdapter]:
    """The NATS adapter alone, for what only a real broker process can show."""
    adapter = await nats_adapter(nats_server)
    try:
        yield adapter
    finally:
        await adapter.client.close()


def needs(adapter: Adapter, feature: str) -> None:
    if not getattr(adapter.features, feature):
        pytest.skip(f"{type(adapter).__name__} does not claim {feature}")


# --- every adapter ----------------------------------------------------------------------


class TestPublishing:
    """Publishing: every message gets an answer, in order."""

    async def test_each_message_is_acknowledged_in_order_with_increasing_sequences(
        self, adapter: Adapter
    ) -> None:
        messages = events(5)

        results = await (await adapter.publisher()).publish(messages)

        assert ids(results) == ids(messages)
        assert all(result.acknowledged and not result.duplicate for result in results)
        sequences = [result.sequence or 0 for result in results]
        assert all(a < b for a, b in itertools.pairwise(sequences)), sequences
        assert sequences[0] >= 1

    async def test_publishing_nothing_answers_nothing(self, adapter: Adapter) -> None:
        assert await (await adapter.publisher()).publish([]) == []

    async def test_a_republished_id_is_stored_once(self, adapter: Adapter) -> None:
        needs(adapter, "broker_dedupe")
        publisher, subscriber = await adapter.publisher(), await adapter.subscriber()
        message, other = event(), event()
        [first] = await publisher.publish([message])

        [again, fresh] = await publisher.publish([message, other])

        assert again.acknowledged
        assert again.duplicate
        assert again.sequence == first.sequence
        assert fresh.acknowledged
        assert not fresh.duplicate
        assert ids(await receive(subscriber, 2)) == ids([message, other])
        assert await subscriber.fetch(10, wait=0.2) == []


class TestDelivery:
    """Delivery: intact, in order, and again until acked."""

    async def test_a_published_message_arrives_intact(self, adapter: Adapter) -> None:
        publisher, subscriber = await adapter.publisher(), await adapter.subscriber()
        message = event({"causation-id": "cmd-7", "schema-version": "1"})

        [result] = await publisher.publish([message])
        [delivery] = await receive(subscriber, 1)

        assert delivery.message.id == message.id
        assert delivery.message.topic == TOPIC
        assert delivery.message.payload == message.payload
        assert dict(delivery.message.headers) == dict(message.headers)
        assert delivery.attempt == 1
        assert delivery.sequence == result.sequence

    async def test_first_deliveries_come_in_publish_order(self, adapter: Adapter) -> None:
        needs(adapter, "ordered_per_key")
        publisher, subscriber = await adapter.publisher(), await adapter.subscriber()
        messages = events(30)

        await publisher.publish(messages[:10])
        await publisher.publish(messages[10:])
        deliveries = await receive(subscriber, 30)

        assert ids(deliveries) == ids(messages)

    async def test_fetch_with_nothing_to_deliver_returns_nothing_after_about_wait(
        self, adapter: Adapter
    ) -> None:
        subscriber = await adapter.subscriber()

        started = time.monotonic()
        deliveries = await subscriber.fetch(10, wait=0.3)
        waited = time.monotonic() - started

        assert deliveries == []
        assert 0.25 <= waited < 1.5

    async def test_fetch_wakes_as_soon_as_a_message_is_published(self, adapter: Adapter) -> None:
        publisher, subscriber = await adapter.publisher(), await adapter.subscriber()
        message = event()

        fetching = asyncio.ensure_future(subscriber.fetch(10, wait=5.0))
        await asyncio.sleep(0)  # the fetch starts, and finds nothing yet
        await publisher.publish([message])
        deliveries = await asyncio.wait_for(fetching, timeout=2.0)

        assert ids(deliveries) == [message.id]

    async def test_an_acked_message_is_not_delivered_again(self, adapter: Adapter) -> None:
        publisher = await adapter.publisher()
        subscriber = await adapter.subscriber(ack_wait=ACK_WAIT)
        await publisher.publish(events(1))
        [delivery] = await receive(subscriber, 1)

        await delivery.ack()

        assert await subscriber.fetch(10, wait=ACK_WAIT + 0.3) == []
        await subscriber.close()
        successor = await adapter.subscriber(ack_wait=ACK_WAIT)
        assert await successor.fetch(10, wait=0.3) == []

    async def test_an_unacked_delivery_comes_back_after_the_ack_wait(
        self, adapter: Adapter
    ) -> None:
        publisher = await adapter.publisher()
        subscriber = await adapter.subscriber(ack_wait=ACK_WAIT)
        message = event()
        await publisher.publish([message])
        [first] = await receive(subscriber, 1)
        delivered_at = time.monotonic()

        [again] = await receive(subscriber, 1)

        assert time.monotonic() - delivered_at >= ACK_WAIT * 0.8
        assert again.message.id == message.id
        assert again.sequence == first.sequence
        assert again.attempt == 2

    async def test_a_nakd_message_comes_back_after_its_delay_with_the_next_attempt(
        self, adapter: Adapter
    ) -> None:
        publisher, subscriber = await adapter.publisher(), await adapter.subscriber()
        message, other = event(), event()
        await publisher.publish([message, other])
        [first, second] = await receive(subscriber, 2)
        await second.ack()

        await first.nak(NAK_DELAY)
        nakd_at = time.monotonic()
        [again] = await receive(subscriber, 1)

        assert time.monotonic() - nakd_at >= NAK_DELAY * 0.8
        assert again.message.id == message.id
        assert again.attempt == 2
        await again.ack()
        assert await subscriber.fetch(10, wait=NAK_DELAY + 0.2) == []

    async def test_a_new_subscriber_on_the_same_durable_resumes_after_the_last_ack(
        self, adapter: Adapter
    ) -> None:
        publisher = await adapter.publisher()
        messages = events(3)
        await publisher.publish(messages)
        first = await adapter.subscriber()
        for delivery in await receive(first, 2):
            await delivery.ack()
        await first.close()

        successor = await adapter.subscriber()
        resumed = await receive(successor, 1)

        assert ids(resumed) == [messages[2].id]
        # Never handed out before; sent ahead to the first one and given back, at most.
        given_back = adapter.features.gives_back_sent_ahead and resumed[0].attempt == 2
        assert resumed[0].attempt == 1 or given_back

    async def test_durables_each_get_every_message(self, adapter: Adapter) -> None:
        publisher = await adapter.publisher()
        billing = await adapter.subscriber("billing")
        audit = await adapter.subscriber("audit")
        messages = events(3)

        await publisher.publish(messages)

        assert ids(await receive(billing, 3)) == ids(messages)
        assert ids(await receive(audit, 3)) == ids(messages)

    async def test_the_lag_counts_what_is_undelivered_or_unacked(self, adapter: Adapter) -> None:
        publisher, subscriber = await adapter.publisher(), await adapter.subscriber()
        await publisher.publish(events(3))
        await eventually(lambda: _lag_is(subscriber, 3), "the lag to count 3")

        [delivery, _] = await receive(subscriber, 2)
        assert await subscriber.pending() == 3

        await delivery.ack()
        await eventually(lambda: _lag_is(subscriber, 2), "the lag to drop to 2")

    async def test_messages_and_the_consumer_survive_a_broker_restart(
        self, adapter: Adapter
    ) -> None:
        needs(adapter, "persistent")
        publisher = await adapter.publisher()
        messages = events(3)
        await publisher.publish(messages)
        subscriber = await adapter.subscriber()
        [delivery] = await receive(subscriber, 1)
        await delivery.ack()
        await eventually(lambda: _lag_is(subscriber, 2), "the ack to be recorded")

        await adapter.restart_broker()

        # A message the broker sent just before it went down may come again, the broker
        # having lost that it was sent: delivery is at least once. None may be missing.
        resumed = await _receive_each_through_outage(subscriber, ids(messages[1:]))
        assert resumed == ids(messages[1:])


class TestDeadLetters:
    """Dead letters: kept with why and when, listed oldest first, replayed to their topic."""

    async def test_a_dead_letter_keeps_the_message_the_error_and_the_time(
        self, adapter: Adapter
    ) -> None:
        dead_letters = await adapter.dead_letters()
        message = event()

        await dead_letters.put(message, "ValueError: price missing\n  at line 3")

        [letter] = await dead_letters.list()
        assert letter.message.id == message.id
        assert letter.message.topic == TOPIC
        assert letter.message.payload == message.payload
        assert dict(letter.message.headers) == dict(message.headers)
        assert letter.error == "ValueError: price missing at line 3"
        failed_at = datetime.fromisoformat(letter.failed_at)
        assert letter.failed_at.endswith("Z")
        assert timedelta(0) <= datetime.now(UTC) - failed_at < timedelta(minutes=1)

    async def test_a_dead_letter_put_again_after_a_lost_ack_is_kept_once(
        self, adapter: Adapter
    ) -> None:
        dead_letters = await adapter.dead_letters()
        first, second = events(2)

        await dead_letters.put(first, "boom")
        await dead_letters.put(first, "boom")  # the first put's ack was lost: the caller retried
        await dead_letters.put(second, "boom")

        assert [letter.message.id for letter in await dead_letters.list()] == ids([first, second])

    async def test_a_long_error_is_cut_to_one_short_line(self, adapter: Adapter) -> None:
        dead_letters = await adapter.dead_letters()

        await dead_letters.put(event(), "Traceback\n" + "x" * 5000)

        [letter] = await dead_letters.list()
        assert "\n" not in letter.error
        assert letter.error.startswith("Traceback x")
        assert len(letter.error) <= 1000

    async def test_dead_letters_are_listed_oldest_first_up_to_the_limit(
        self, adapter: Adapter
    ) -> None:
        dead_letters = await adapter.dead_letters()
        messages = events(4)
        for message in messages:
            await dead_letters.put(message, "boom")

        listed = await dead_letters.list(limit=3)

        assert [letter.message.id for letter in listed] == ids(messages[:3])
        assert all(a.sequence < b.sequence for a, b in itertools.pairwise(listed))

    async def test_a_letter_too_large_for_the_store_is_kept_without_its_payload(
        self, adapter: Adapter
    ) -> None:
        # Refused for its size, it was retried every second for good, holding its Kafka
        # partition's offset back, and counted nowhere.
        if isinstance(adapter, MemoryAdapter):
            pytest.skip("the in-memory store keeps letters of any size")
        dead_letters, publisher = await adapter.dead_letters(), await adapter.publisher()
        # NATS delivers at most max_payload with headers; the letter adds its own headers,
        # the error among them, and the server would cut the connection of whoever sent it.
        # Kafka takes records of 1 MiB at most, headers included.
        size = adapter.client.max_payload - 60 if isinstance(adapter, NatsAdapter) else 2_000_000
        huge = replace(event(), payload=b"x" * size)

        async def refuse(deliveries: Sequence[Delivery]) -> list[Settlement]:
            return [Reject("not a cart event: " + "why " * 200) for _ in deliveries]

        async def settle(*_: object) -> None:
            return None

        handled = dead_letter(dead_letters)(refuse)
        [outcome] = await handled([Delivery(huge, 1, 1, settle, settle)])

        assert isinstance(outcome, Ack)
        assert outcome.label == "dead-lettered"
        [letter] = await dead_letters.list()
        assert letter.message.id == huge.id
        assert letter.message.payload == b""
        assert letter.message.headers[PAYLOAD_DROPPED_HEADER] == str(size)
        assert f"its payload ({size} bytes) was too large to keep here" in letter.error
        with pytest.raises(KeyError, match="kept no payload"):
            await dead_letters.replay(letter.sequence, publisher)

    async def test_a_replayed_dead_letter_goes_back_to_its_topic_and_is_forgotten(
        self, adapter: Adapter
    ) -> None:
        dead_letters, publisher = await adapter.dead_letters(), await adapter.publisher()
        subscriber = await adapter.subscriber()
        message, other = event(), event()
        await dead_letters.put(message, "boom")
        await dead_letters.put(other, "bang")
        [letter, kept] = await dead_letters.list()

        result = await dead_letters.replay(letter.sequence, publisher)

        assert result.acknowledged
        assert [x.sequence for x in await dead_letters.list()] == [kept.sequence]
        [delivery] = await receive(subscriber, 1)
        assert delivery.message.id == result.message_id == f"{message.id}#replay-{letter.sequence}"
        assert delivery.message.payload == message.payload
        assert dict(delivery.message.headers) == dict(message.headers)  # event-id included

    async def test_a_dead_letter_replayed_at_once_is_not_taken_for_its_original(
        self, adapter: Adapter
    ) -> None:
        needs(adapter, "broker_dedupe")
        dead_letters, publisher = await adapter.dead_letters(), await adapter.publisher()
        subscriber = await adapter.subscriber()
        message = event()
        await publisher.publish([message])  # published, failed and dead-lettered just now
        [original] = await receive(subscriber, 1)
        await original.ack()
        await dead_letters.put(original.message, "boom")
        [letter] = await dead_letters.list()

        result = await dead_letters.replay(letter.sequence, publisher)

        assert result.acknowledged
        assert not result.duplicate
        assert await dead_letters.list() == []
        [replayed] = await receive(subscriber, 1)
        assert replayed.message.headers["event-id"] == message.id
        assert replayed.message.payload == message.payload

    async def test_a_replay_that_is_repeated_is_stored_once(self, adapter: Adapter) -> None:
        needs(adapter, "broker_dedupe")
        dead_letters, publisher = await adapter.dead_letters(), await adapter.publisher()
        subscriber = await adapter.subscriber()
        await dead_letters.put(event(), "boom")
        await dead_letters.put(event(), "boom")
        [letter, _] = await dead_letters.list()
        replayed = replace(letter.message, id=f"{letter.message.id}#replay-{letter.sequence}")
        [lost_ack] = await publisher.publish([replayed])  # a replay whose deletion was lost

        result = await dead_letters.replay(letter.sequence, publisher)

        assert result.acknowledged
        assert result.duplicate
        assert result.sequence == lost_ack.sequence
        assert len(await dead_letters.list()) == 1
        assert ids(await receive(subscriber, 1)) == [replayed.id]
        assert await subscriber.fetch(10, wait=0.2) == []

    async def test_replaying_an_unknown_dead_letter_is_a_key_error(self, adapter: Adapter) -> None:
        dead_letters, publisher = await adapter.dead_letters(), await adapter.publisher()

        with pytest.raises(KeyError):
            await dead_letters.replay(999, publisher)


# --- NATS: the broker process comes and goes --------------------------------------------


@pytest.mark.nats
class TestNatsBrokerOutage:
    """A real nats-server stopped and started under a live connection."""

    async def test_publishing_while_the_broker_is_down_fails_fast_then_works_again(
        self, nats: NatsAdapter
    ) -> None:
        publisher = NatsPublisher(nats.js, ack_timeout=1.0)
        subscriber = await nats.subscriber()
        messages = events(3)
        nats.server.stop()

        started = time.monotonic()
        failed = await publisher.publish(messages)

        assert time.monotonic() - started < 1.0 + 0.5
        assert [result.acknowledged for result in failed] == [False, False, False]
        assert all(result.error for result in failed)

        nats.server.start()

        async def published() -> bool:
            # As the outbox relay does: publish what failed again, same ids. Some of the
            # failed publishes may have landed after the reconnect; those come back as
            # duplicates, acknowledged.
            results = await publisher.publish(messages)
            return all(result.acknowledged for result in results)

        await eventually(published, "publishes to be acknowledged after the restart")
        assert ids(await _receive_through_outage(subscriber, 3)) == ids(messages)
        assert await subscriber.fetch(10, wait=0.2) == []

    async def test_publishing_to_a_subject_no_stream_holds_is_an_error_result(
        self, nats: NatsAdapter
    ) -> None:
        publisher = NatsPublisher(nats.js, ack_timeout=1.0)
        stray = Message("m-1", "nowhere.events", b"{}")

        [lost, stored] = await publisher.publish([stray, event()])

        assert not lost.acknowledged
        assert lost.error is not None
        assert "no stream" in lost.error
        assert stored.acknowledged

    async def test_a_bad_header_fails_its_own_message_only(self, nats: NatsAdapter) -> None:
        publisher = NatsPublisher(nats.js, ack_timeout=1.0)
        good, bad = event(), event({"bad header:": "x"})

        results = await publisher.publish([good, bad])

        assert [result.acknowledged for result in results] == [True, False]

    async def test_fetch_during_an_outage_returns_or_raises_within_its_wait(
        self, nats: NatsAdapter
    ) -> None:
        subscriber = await nats.subscriber()
        nats.server.stop()

        started = time.monotonic()
        # The client may not have noticed yet: then it is an ordinary, empty fetch.
        with contextlib.suppress(ConnectionError):
            assert await subscriber.fetch(10, wait=0.3) == []
        assert time.monotonic() - started < 0.3 + 1.0

        await eventually(_not_connected(nats.client), "the client to notice the outage")
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await subscriber.fetch(10, wait=0.3)
        assert 0.25 <= time.monotonic() - started < 0.3 + 1.0

        nats.server.start()
        message = event()
        await eventually(lambda: _stored(nats, message), "a publish after the restart")
        assert ids(await _receive_through_outage(subscriber, 1)) == [message.id]

    async def test_a_dead_letter_that_cannot_be_stored_raises(self, nats: NatsAdapter) -> None:
        dead_letters = NatsDeadLetters(nats.js, ack_timeout=1.0)
        nats.server.stop()

        with pytest.raises(ConnectionError):
            await dead_letters.put(event(), "boom")


@pytest.mark.nats
class TestNatsConnection:
    """Connecting, and the streams the project needs."""

    async def test_a_service_started_before_its_broker_connects_once_it_is_up(
        self, tmp_path: Path
    ) -> None:
        server = NatsServer(tmp_path / "nats")
        refused = asyncio.Event()

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, ConnectionRefusedError):
                refused.set()

        connecting = asyncio.ensure_future(
            connect_nats([server.url], name="early", reconnect_time_wait=0.1, error_cb=on_error)
        )
        await asyncio.wait_for(refused.wait(), timeout=PATIENCE)
        assert not connecting.done()  # the service is up and retrying; the broker is not
        try:
            server.start()
            client = await asyncio.wait_for(connecting, timeout=PATIENCE)
            assert client.is_connected
            await client.close()
        finally:
            connecting.cancel()
            server.close()

    async def test_waiting_for_a_broker_is_logged_once_in_a_while_not_at_each_attempt(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        server = NatsServer(tmp_path / "nats")  # not started: its port refuses
        refusals = 0

        async def on_error(exc: Exception) -> None:
            nonlocal refusals
            refusals += isinstance(exc, ConnectionRefusedError)

        connecting = asyncio.ensure_future(
            connect_nats([server.url], name="early", reconnect_time_wait=0.05, error_cb=on_error)
        )
        try:
            deadline = time.monotonic() + PATIENCE
            while refusals < 3:
                assert time.monotonic() < deadline, "no retries seen"
                await asyncio.sleep(0.05)
        finally:
            connecting.cancel()
        waiting = [r for r in caplog.records if "no server reached yet" in r.getMessage()]
        assert len(waiting) == 1
        assert waiting[0].levelname == "WARNING"
        assert "still trying" in waiting[0].getMessage()

    async def test_a_link_still_waiting_for_its_broker_stops_at_once(self, tmp_path: Path) -> None:
        from microservice_connector.runtime.nats_link import NatsLink

        server = NatsServer(tmp_path / "nats")  # never started: nothing answers
        link = NatsLink([server.url], name="waiting", options={"reconnect_time_wait": 0.1})
        stop = asyncio.Event()
        running = asyncio.ensure_future(link.run(stop))
        await asyncio.sleep(0)  # let it begin to connect
        assert not running.done()
        stop.set()
        await asyncio.wait_for(running, timeout=2.0)  # it used to wait for a server forever
        assert not link.connected

    async def test_refused_credentials_fail_at_once_and_good_ones_connect(
        self, tmp_path: Path
    ) -> None:
        with NatsServer(tmp_path / "nats", args=["--user", "cart", "--pass", "s3cret"]) as server:
            with pytest.raises(BrokerRefusedCredentials):
                await asyncio.wait_for(
                    connect_nats([server.url], name="t", user="cart", password="wrong"),
                    timeout=PATIENCE,
                )
            client = await connect_nats([server.url], name="t", user="cart", password="s3cret")
            assert client.is_connected
            await client.close()

    async def test_asked_for_tls_a_server_that_does_not_offer_it_is_sent_nothing(self) -> None:
        # nats-py upgrades only when the server asks: it sent CONNECT, the password in it,
        # in plain text to a server (or a man in the middle) that did not.
        received = bytearray()

        async def plain_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(
                b'INFO {"server_id":"plain","max_payload":1048576,"auth_required":true}\r\n'
            )
            await writer.drain()
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(4096):
                    received.extend(chunk)
            writer.close()

        server = await asyncio.start_server(plain_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(BrokerUnavailable, match="does not offer TLS"):
                await asyncio.wait_for(
                    connect_nats(
                        [f"nats://cart:s3cret@127.0.0.1:{port}"],
                        name="t",
                        tls=ssl.create_default_context(),
                    ),
                    timeout=PATIENCE,
                )
        finally:
            server.close()
        assert b"s3cret" not in received
        assert b"CONNECT" not in received

    async def test_ensure_stream_is_idempotent_and_safe_to_race(self, nats: NatsAdapter) -> None:
        infos = await asyncio.gather(
            *(ensure_stream(nats.js, "BILLING", ["billing.events"]) for _ in range(5))
        )

        assert {tuple(info.config.subjects or []) for info in infos} == {("billing.events",)}
        assert infos[0].config.duplicate_window == 120.0

    async def test_ensure_stream_updates_the_subjects_of_an_existing_stream(
        self, nats: NatsAdapter
    ) -> None:
        await ensure_stream(nats.js, "BILLING", ["billing.events"])
        [result] = await NatsPublisher(nats.js).publish([Message("b-1", "billing.events", b"1")])

        info = await ensure_stream(nats.js, "BILLING", ["billing.events", "billing.audit"])

        assert sorted(info.config.subjects or []) == ["billing.audit", "billing.events"]
        assert info.state.messages == 1
        assert result.acknowledged


def _not_connected(client: Client) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not client.is_connected

    return check


async def _stored(adapter: Adapter, message: Message) -> bool:
    [result] = await (await adapter.publisher()).publish([message])
    return result.acknowledged


async def _lag_is(subscriber: Consumer, lag: int) -> bool:
    return await subscriber.pending() == lag


async def _receive_each_through_outage(subscriber: Subscriber, wanted: list[str]) -> list[str]:
    """Fetch through an outage until each of `wanted` came at least once; the ids in the
    order they first came."""
    seen: list[str] = []
    deadline = time.monotonic() + PATIENCE
    while not set(wanted) <= set(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"got {seen} of {wanted} after the restart")
        try:
            fetched = await subscriber.fetch(len(wanted), wait=0.5)
        except ConnectionError:
            continue
        seen += [delivery.message.id for delivery in fetched if delivery.message.id not in seen]
    return seen


async def _receive_through_outage(subscriber: Subscriber, count: int) -> list[Delivery]:
    """Like `receive`, but a fetch may fail while the client reconnects."""
    got: list[Delivery] = []
    deadline = time.monotonic() + PATIENCE
    while len(got) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(got)} of {count} deliveries after the restart")
        try:
            got += await subscriber.fetch(count - len(got), wait=0.5)
        except ConnectionError:
            continue
    return got
