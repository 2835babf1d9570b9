"""What only the Kafka adapter has to show, on a real Tansu: offsets are committed only past
acked messages, whatever order the acks come in; one key keeps one partition; a rebalance
hands unacked messages to the next owner; and a broker that becomes unreachable (a cut
connection, Tansu running on with its data) makes publishes fail fast, then work again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from contract.test_messaging import (
    KAFKA_SESSION_TIMEOUT_MS,
    PATIENCE,
    TOPIC,
    KafkaAdapter,
    event,
    events,
    eventually,
    ids,
    kafka_adapter,
    receive,
)
from microservice_connector.messaging import Message
from microservice_connector.messaging.kafka import KafkaPublisher, KafkaSubscriber
from microservice_connector.messaging.kafka.records import PARTITION_STRIDE
from support.tansu import TansuServer, tansu_or_skip

pytestmark = pytest.mark.kafka


@pytest.fixture
async def kafka(tansu_server: TansuServer) -> AsyncIterator[KafkaAdapter]:
    adapter = await kafka_adapter(tansu_server)
    try:
        yield adapter
    finally:
        await adapter.close()


@pytest.fixture
async def unplugged(tmp_path: Path) -> AsyncIterator[KafkaAdapter]:
    """A Kafka adapter whose every connection goes through a proxy the test can cut."""
    tansu_or_skip()
    with TansuServer(tmp_path / "tansu", behind_proxy=True) as server:
        adapter = await kafka_adapter(server)
        try:
            yield adapter
        finally:
            await adapter.close()


def keyed(key: str) -> Message:
    message = event()
    return Message(message.id, message.topic, message.payload, message.headers, key=key)


class TestOffsets:
    """The committed offset never passes a message that was not acked."""

    async def test_a_successor_gets_the_unacked_message_and_what_follows_not_what_precedes(
        self, kafka: KafkaAdapter
    ) -> None:
        messages = events(4)  # one key: one partition
        await (await kafka.publisher()).publish(messages)
        first = await kafka.subscriber()
        [one, two, three, four] = await receive(first, 4)
        for delivery in (one, three, four):  # two stays unacked: the commit stops at it
            await delivery.ack()
        await first.close()

        successor = await kafka.subscriber()
        again = await receive(successor, 3)

        assert ids(again) == ids(messages[1:])
        assert two.message.id == messages[1].id
        assert [delivery.attempt for delivery in again] == [1, 1, 1]

    async def test_acks_out_of_order_commit_once_the_gap_is_filled(
        self, kafka: KafkaAdapter
    ) -> None:
        await (await kafka.publisher()).publish(events(3))
        subscriber = await kafka.subscriber()
        [one, two, three] = await receive(subscriber, 3)

        await three.ack()
        await two.ack()
        assert await subscriber.pending() == 3
        await one.ack()

        assert await subscriber.pending() == 0

    async def test_a_nakd_message_holds_the_commit_until_it_is_acked(
        self, kafka: KafkaAdapter
    ) -> None:
        await (await kafka.publisher()).publish(events(2))
        subscriber = await kafka.subscriber()
        [first, second] = await receive(subscriber, 2)
        await first.nak(0.2)
        await second.ack()
        assert await subscriber.pending() == 2

        [again] = await receive(subscriber, 1)
        assert (again.message.id, again.attempt) == (first.message.id, 2)
        await again.ack()

        assert await subscriber.pending() == 0


class TestPartitions:
    """Keys choose partitions; groups share them out."""

    async def test_one_key_stays_in_one_partition_in_order(self, kafka: KafkaAdapter) -> None:
        messages = [keyed(f"cart-{n % 5}") for n in range(40)]

        results = await (await kafka.publisher()).publish(messages)
        deliveries = await receive(await kafka.subscriber(), 40)

        partition_of: dict[str, set[int]] = {}
        for message, result in zip(messages, results, strict=True):
            assert result.sequence is not None
            partition_of.setdefault(message.key or "", set()).add(
                result.sequence // PARTITION_STRIDE
            )
        assert all(len(partitions) == 1 for partitions in partition_of.values())
        assert len(set().union(*partition_of.values())) > 1  # five keys, three partitions
        for key in partition_of:
            sent = [m.id for m in messages if m.key == key]
            got = [d.message.id for d in deliveries if d.message.key == key]
            assert got == sent

    async def test_a_member_leaving_hands_its_unacked_messages_to_the_other(
        self, kafka: KafkaAdapter
    ) -> None:
        messages = [keyed(f"cart-{n}") for n in range(12)]
        await (await kafka.publisher()).publish(messages)
        leaving = await kafka.subscriber()
        staying = await kafka.subscriber()  # the group rebalances: three partitions, two members
        taken: list[str] = []
        deadline = time.monotonic() + PATIENCE
        while not taken and time.monotonic() < deadline:
            taken = ids(await leaving.fetch(12, wait=0.5))  # fetched, never acked
        await leaving.close()

        got: set[str] = set()
        deadline = time.monotonic() + PATIENCE
        while got != {m.id for m in messages} and time.monotonic() < deadline:
            for delivery in await staying.fetch(12, wait=0.5):
                got.add(delivery.message.id)
                await delivery.ack()

        assert taken
        assert got == {m.id for m in messages}


class TestUnreachableBroker:
    """The connection is cut while Tansu runs on: data and group offsets survive."""

    async def test_publishing_fails_fast_while_cut_and_works_once_restored(
        self, unplugged: KafkaAdapter
    ) -> None:
        proxy = unplugged.server.proxy
        assert proxy is not None
        publisher = KafkaPublisher(unplugged.producer, ack_timeout=1.0)
        subscriber = await unplugged.subscriber()
        before, during = events(2), events(3)
        await publisher.publish(before)
        [first, _] = await receive(subscriber, 2)
        await first.ack()
        proxy.cut()

        started = time.monotonic()
        failed = await publisher.publish(during)

        assert time.monotonic() - started < 1.0 + 1.0
        assert not any(result.acknowledged for result in failed)
        assert all(result.error for result in failed)

        proxy.restore()

        async def published() -> bool:
            return all(r.acknowledged for r in await publisher.publish(during))

        await eventually(published, "publishes to be acknowledged once reconnected")
        # Nothing was lost across the cut: what was not acked comes to the next member.
        await subscriber.close()
        successor = await KafkaSubscriber.create(
            unplugged.config,
            topic=TOPIC,
            group="billing",
            session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
        )
        unplugged.opened.append(successor)
        got: list[str] = []
        deadline = time.monotonic() + PATIENCE
        while not set(ids(during)) <= set(got) and time.monotonic() < deadline:
            got += ids(await successor.fetch(10, wait=0.5))  # a failed publish may have landed
        assert got[0] == before[1].id
        assert set(ids(during)) <= set(got)


class TestTooLarge:
    """A message over the producer's `max_request_size` fails alone, marked as refused."""

    async def test_a_message_too_large_is_refused_and_the_others_are_stored(
        self, kafka: KafkaAdapter
    ) -> None:
        publisher = KafkaPublisher(kafka.producer, ack_timeout=5.0)
        before, after = events(2)
        big = event()
        too_large = Message(big.id, big.topic, b"x" * (1024 * 1024 + 1), big.headers)

        results = await publisher.publish([before, too_large, after])

        assert [r.acknowledged for r in results] == [True, False, True]
        assert [r.refused for r in results] == [False, True, False]
        assert "MessageSizeTooLargeError" in (results[1].error or "")


class TestLink:
    """The service's link to Kafka."""

    async def test_a_link_waiting_on_a_broker_that_never_answers_stops_at_once(self) -> None:
        from microservice_connector.messaging.kafka import KafkaConfig
        from microservice_connector.runtime.kafka_link import KafkaLink, project_topics

        accepted: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append((reader, writer))  # takes the connection, never answers

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = KafkaConfig(bootstrap=f"127.0.0.1:{port}", client_id="waiting")
        link = KafkaLink(config, topics=project_topics(1))
        stop = asyncio.Event()
        running = asyncio.ensure_future(link.run(stop))

        async def connected() -> bool:
            return bool(accepted)

        try:
            await eventually(connected, "the link to connect")
            stop.set()
            await asyncio.wait_for(running, timeout=3.0)  # it used to wait out the request
            for reader, _ in accepted:  # and it closed what it had opened
                await asyncio.wait_for(reader.read(), timeout=1.0)
                assert reader.at_eof()
        finally:
            running.cancel()
            for _, writer in accepted:
                writer.close()
            server.close()
        with pytest.raises(ConnectionError, match="not connected"):
            await link.check()


class TestDeadLetterTopic:
    """Dead letters on Kafka: one partition, replay markers."""

    async def test_dead_letters_stored_together_are_all_listed(self, kafka: KafkaAdapter) -> None:
        dead_letters = await kafka.dead_letters()
        messages = events(5)

        # Put at once, they may share one record batch (Tansu then under-reports the end).
        await asyncio.gather(*(dead_letters.put(message, "boom") for message in messages))

        listed = await dead_letters.list()
        assert sorted(letter.message.id for letter in listed) == sorted(ids(messages))

    async def test_a_replayed_dead_letter_cannot_be_replayed_again(
        self, kafka: KafkaAdapter
    ) -> None:
        dead_letters, publisher = await kafka.dead_letters(), await kafka.publisher()
        await dead_letters.put(event(), "boom")
        [letter] = await dead_letters.list()

        assert (await dead_letters.replay(letter.sequence, publisher)).acknowledged

        with pytest.raises(KeyError):
            await dead_letters.replay(letter.sequence, publisher)
