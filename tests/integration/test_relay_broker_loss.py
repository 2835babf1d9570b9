"""A broker that loses what it acknowledged: the relay notices (its audit) and publishes the
lost rows again, counting it. Real nats-server and Tansu processes, on SQLite and PostgreSQL
outboxes."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaConsumer
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore
from microservice_connector.eventstore.broker_audit import BrokerAudit
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.holdings import BrokerHoldings, Holding
from microservice_connector.messaging.kafka import (
    KafkaConfig,
    KafkaPublisher,
    ensure_topics,
    start_producer,
)
from microservice_connector.messaging.kafka.holdings import KafkaHoldings
from microservice_connector.messaging.kafka.records import MESSAGE_ID_HEADER, header_map
from microservice_connector.messaging.nats import NatsPublisher, ensure_stream
from microservice_connector.messaging.nats.holdings import NatsHoldings
from microservice_connector.messaging.ports import Publisher
from microservice_connector.runtime.relay_metrics import BrokerLossMetrics
from support.nats import NatsServer
from support.tansu import TansuServer

TOPIC = "cart.events"
STREAMS = {"CART": ["cart.events"]}
NOW = datetime(2026, 12, 1, tzinfo=UTC)
DEADLINE_S = 30.0
AUDIT_INTERVAL_S = 0.2
NO_PERIODIC_CHECK = 3600.0  # longer than any test: only the check at start runs


@pytest.fixture
def store(sql_event_store: SqlEventStore) -> SqlEventStore:
    return sql_event_store


def append_carts(store: SqlEventStore, carts: range) -> list[str]:
    """One event on each cart of `carts`; the event ids."""
    ids = []
    for n in carts:
        cart = f"cart-{n}"
        event = NewEvent("ItemAdded", ItemAdded(cart, "item-001", 1, NOW), NOW)
        [recorded] = store.append(AppendRequest(cart, "ShoppingCart", 0, [event]))
        ids.append(recorded.event_id)
    return ids


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE_S:g} s waiting for {what}")
        await asyncio.sleep(0.05)


class CountedHoldings:
    """The real holdings, counting the audit's reads."""

    def __init__(self, holdings: BrokerHoldings) -> None:
        self._holdings = holdings
        self.reads = 0

    async def holdings(self, topic: str) -> list[Holding]:
        self.reads += 1
        return await self._holdings.holdings(topic)

    async def checked_more(self, times: int) -> None:
        """Wait until the audit has read the broker `times` more times."""
        wanted = self.reads + times

        async def done() -> bool:
            return self.reads >= wanted

        await until(done, f"{times} more audits")


@dataclass
class RunningRelay:
    """A relay with its audit, running, and the metrics it counts into."""

    store: SqlEventStore
    registry: CollectorRegistry

    def counted(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"topic": TOPIC, **labels}) or 0.0

    async def all_published(self) -> bool:
        return (await asyncio.to_thread(self.store.outbox.status)).pending == 0


@asynccontextmanager
async def running_relay(
    store: SqlEventStore,
    publisher: Publisher,
    holdings: BrokerHoldings,
    audit_interval: float = AUDIT_INTERVAL_S,
) -> AsyncIterator[RunningRelay]:
    """A relay whose audit checks at start and every `audit_interval` seconds."""
    registry = CollectorRegistry()
    audit = BrokerAudit(store.outbox, holdings, [TOPIC], observer=BrokerLossMetrics(registry))
    relay = OutboxRelay(
        store.outbox, publisher, poll_interval=0.05, audit=audit, audit_interval=audit_interval
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield RunningRelay(store, registry)
    finally:
        stop.set()
        await task


# --- NATS ---------------------------------------------------------------------------------


async def stream_ids(js: JetStreamContext) -> list[str]:
    """The `Nats-Msg-Id` of every message the CART stream holds, in stream order."""
    ids: list[str] = []
    sequence = 1
    while True:
        try:
            message = await js.get_msg("CART", sequence, next=True)
        except NotFoundError:
            return ids
        ids.append((message.headers or {}).get("Nats-Msg-Id", ""))
        sequence = (message.seq or sequence) + 1


@asynccontextmanager
async def nats_relay(store: SqlEventStore, server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = client.jetstream(timeout=1.0)  # a request lost in a restart fails fast
    await ensure_stream(js, "CART", STREAMS["CART"])
    try:
        yield js
    finally:
        await client.close()


async def holds_exactly(js: JetStreamContext, ids: list[str]) -> bool:
    try:
        return sorted(await stream_ids(js)) == sorted(ids)
    except Exception:  # the server is still coming back
        return False


async def test_a_stream_that_keeps_everything_is_never_found_lossy(
    store: SqlEventStore, nats_server: NatsServer
) -> None:
    async with nats_relay(store, nats_server) as js:
        holdings = CountedHoldings(NatsHoldings(js, STREAMS))
        async with running_relay(store, NatsPublisher(js), holdings) as relay:
            ids: list[str] = []
            for batch in range(5):  # audits run between and during the rounds
                ids += append_carts(store, range(batch * 20, batch * 20 + 20))
                await until(relay.all_published, f"batch {batch} published")
            await holdings.checked_more(3)
            assert relay.counted("msc_relay_republished_rows_total") == 0
            assert await stream_ids(js) == ids


async def test_a_stream_deleted_and_made_again_gets_every_event_again(
    store: SqlEventStore, nats_server: NatsServer
) -> None:
    async with nats_relay(store, nats_server) as js:
        holdings = NatsHoldings(js, STREAMS)
        async with running_relay(store, NatsPublisher(js), holdings) as relay:
            ids = append_carts(store, range(5))
            await until(relay.all_published, "the first events published")
            await js.delete_stream("CART")
            await js.add_stream(name="CART", subjects=STREAMS["CART"])

            await until(lambda: holds_exactly(js, ids), "the new stream to hold every event")
            assert relay.counted("msc_relay_broker_regressions_total", kind="recreated") >= 1
            assert relay.counted("msc_relay_republished_rows_total") == 5


async def test_a_server_restarted_without_its_data_gets_every_event_again(
    store: SqlEventStore, nats_server: NatsServer
) -> None:
    async with nats_relay(store, nats_server) as js:
        holdings = NatsHoldings(js, STREAMS)
        async with running_relay(store, NatsPublisher(js), holdings) as relay:
            ids = append_carts(store, range(4))
            await until(relay.all_published, "the first events published")
            nats_server.kill()
            shutil.rmtree(nats_server.store_dir / "jetstream")
            nats_server.start()
            ids += append_carts(store, range(4, 6))  # while the relay finds the loss

            await until(lambda: holds_exactly(js, ids), "the empty server to hold every event")
            assert relay.counted("msc_relay_republished_rows_total") == 4


async def test_a_stream_that_lost_its_tail_gets_the_lost_events_again(
    store: SqlEventStore, nats_server: NatsServer, tmp_path: Path
) -> None:
    """The store folder is put back as it was before the last events were acknowledged, as
    an OS crash before JetStream's fsync leaves it: the stream is the same, shorter."""
    older = tmp_path / "older-store"
    async with nats_relay(store, nats_server) as js:
        holdings = NatsHoldings(js, STREAMS)
        async with running_relay(store, NatsPublisher(js), holdings) as relay:
            ids = append_carts(store, range(3))
            await until(relay.all_published, "the first events published")
            nats_server.stop()
            shutil.copytree(nats_server.store_dir / "jetstream", older)
            nats_server.start()
            ids += append_carts(store, range(3, 7))
            await until(relay.all_published, "the later events published")
            await until(lambda: holds_exactly(js, ids), "the stream to hold all seven")
            nats_server.stop()
            shutil.rmtree(nats_server.store_dir / "jetstream")
            shutil.copytree(older, nats_server.store_dir / "jetstream")
            nats_server.start()

            await until(lambda: holds_exactly(js, ids), "the lost tail published again")
            assert relay.counted("msc_relay_broker_regressions_total", kind="tail_lost") >= 1
            assert relay.counted("msc_relay_republished_rows_total") == 4
            assert await stream_ids(js) == ids  # in commit order, each once


async def test_a_lost_tail_hidden_by_new_publishes_is_found_at_their_acknowledgement(
    store: SqlEventStore, nats_server: NatsServer, tmp_path: Path
) -> None:
    """No periodic check runs here: the stream takes new events at the sequences of the lost
    ones, and the relay sees it in their acknowledgements."""
    older = tmp_path / "older-store"
    async with nats_relay(store, nats_server) as js:
        holdings = NatsHoldings(js, STREAMS)
        async with running_relay(store, NatsPublisher(js), holdings, NO_PERIODIC_CHECK) as relay:
            ids = append_carts(store, range(3))
            await until(relay.all_published, "the first events published")
            nats_server.stop()
            shutil.copytree(nats_server.store_dir / "jetstream", older)
            nats_server.start()
            ids += append_carts(store, range(3, 7))
            await until(relay.all_published, "the later events published")
            nats_server.stop()
            shutil.rmtree(nats_server.store_dir / "jetstream")
            shutil.copytree(older, nats_server.store_dir / "jetstream")
            nats_server.start()
            ids += append_carts(store, range(7, 9))

            await until(lambda: holds_exactly(js, ids), "the lost tail published again")
            assert relay.counted("msc_relay_broker_regressions_total", kind="sequence_reused") == 1
            assert relay.counted("msc_relay_republished_rows_total") == 4


# --- Kafka (Tansu) ------------------------------------------------------------------------


async def topic_ids(config: KafkaConfig) -> list[str]:
    """The message id of every record `cart.events` holds, read from the start."""
    consumer = AIOKafkaConsumer(
        TOPIC, **config.client_options(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=1000)
        records = [record for batch in batches.values() for record in batch]
        return [header_map(record.headers)[MESSAGE_ID_HEADER] for record in records]
    finally:
        await consumer.stop()


async def test_a_topic_that_keeps_everything_is_never_found_lossy(
    store: SqlEventStore, tansu_server: TansuServer
) -> None:
    config = KafkaConfig(tansu_server.bootstrap)
    holdings = CountedHoldings(KafkaHoldings(config, {TOPIC: 3}))
    await holdings.holdings(TOPIC)
    producer = await start_producer(config)
    try:
        async with running_relay(store, KafkaPublisher(producer), holdings) as relay:
            ids: list[str] = []
            for batch in range(5):  # several records per produce batch, audits between
                ids += append_carts(store, range(batch * 20, batch * 20 + 20))
                await until(relay.all_published, f"batch {batch} published")
            await holdings.checked_more(3)
            assert relay.counted("msc_relay_republished_rows_total") == 0
            assert sorted(await topic_ids(config)) == sorted(ids)
    finally:
        await producer.stop()


async def test_tansu_restarted_empty_gets_every_event_again(
    store: SqlEventStore, tansu_server: TansuServer
) -> None:
    config = KafkaConfig(tansu_server.bootstrap)
    holdings = KafkaHoldings(config, {TOPIC: 3})
    await holdings.holdings(TOPIC)  # makes the topic
    producer = await start_producer(config)
    try:
        async with running_relay(store, KafkaPublisher(producer), holdings) as relay:
            ids = append_carts(store, range(6))
            await until(relay.all_published, "the first events published")
            tansu_server.kill()
            tansu_server.start()

            async def holds_every_event() -> bool:
                try:
                    return sorted(await topic_ids(config)) == sorted(ids)
                except Exception:  # the broker is still coming back
                    return False

            await until(holds_every_event, "the empty broker to hold every event")
            assert relay.counted("msc_relay_broker_regressions_total", kind="tail_lost") >= 1
            assert relay.counted("msc_relay_republished_rows_total") == 6
    finally:
        await producer.stop()


async def test_tansu_restarted_empty_and_refilled_gets_the_lost_events_again(
    store: SqlEventStore, tansu_server: TansuServer
) -> None:
    """No periodic check: the new broker's offsets start over under new events, and the
    relay sees it in their acknowledgements."""
    config = KafkaConfig(tansu_server.bootstrap)
    holdings = KafkaHoldings(config, {TOPIC: 1})
    await holdings.holdings(TOPIC)
    producer = await start_producer(config)
    try:
        async with running_relay(
            store, KafkaPublisher(producer), holdings, NO_PERIODIC_CHECK
        ) as relay:
            ids = append_carts(store, range(4))
            await until(relay.all_published, "the first events published")
            tansu_server.kill()
            tansu_server.start()
            await ensure_topics(config, {TOPIC: 1})
            ids += append_carts(store, range(4, 6))

            async def holds_every_event() -> bool:
                try:
                    return sorted(await topic_ids(config)) == sorted(ids)
                except Exception:  # the broker is still coming back
                    return False

            await until(holds_every_event, "the lost events published again")
            assert relay.counted("msc_relay_broker_regressions_total", kind="sequence_reused") == 1
            assert relay.counted("msc_relay_republished_rows_total") == 4
    finally:
        await producer.stop()
