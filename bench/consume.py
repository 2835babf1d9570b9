"""Billing consumption throughput, against a raw nats-py pull-and-ack loop (DESIGN §5).

Setup (not timed): a private nats-server (JetStream, file storage) on a free loopback port, and
stream `CART` holding `--events` ItemAdded messages spread round-robin over `--carts` carts,
each exactly as the outbox relay publishes it: the JSON payload, the headers of
`outbox_rows.message_headers` (event-id, event-type, aggregate-id, aggregate-type,
aggregate-version 1..k per cart in stream order, content-type, schema-version, ...) and
`Nats-Msg-Id` = event id.

* reference: a raw nats-py durable pull consumer (`rawref`; explicit ack, same ack wait and
  max-ack-pending as billing's) fetching `--batch` at a time and awaiting `msg.ack()` for each
  message, until all `--events` are acked.
* ours: billing's real path on a fresh billing SQLite database (WAL, `synchronous=FULL` by
  default): `NatsSubscriber` durable `billing` + `Consumer(..., batch_size=--batch).run` over
  `CartEventHandler(BillingLedger(repository), apply_on_loop=True)` (as billing runs on
  SQLite) wrapped in the middlewares billing uses
  (log_outcomes, dead_letter, retry_with_backoff, recover; not its Prometheus metrics): decode,
  version gate, one transaction per batch, then ack each, until all `--events` are settled as
  applied.

Afterwards every cart's bill must be at its last version with the quantities published, both
consumers must have nothing pending, and no message may have been retried or dead-lettered;
the script exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import FetchTimeoutError

from _support import NatsServer, rate_header, rate_row, stream_messages
from cart_events import cart_events, check_bills
from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.main import MAX_ATTEMPTS, open_billing_repository
from microservice_connector.events.registry import default_registry
from microservice_connector.eventstore.outbox_rows import message_headers
from microservice_connector.messaging.consumer import Ack, Consumer, Settlement
from microservice_connector.messaging.message import Delivery
from microservice_connector.messaging.middleware import (
    chain,
    dead_letter,
    log_outcomes,
    recover,
    retry_with_backoff,
)
from microservice_connector.messaging.nats.connection import connect_nats, ensure_stream
from microservice_connector.messaging.nats.dead_letters import NatsDeadLetters
from microservice_connector.messaging.nats.publisher import MSG_ID_HEADER
from microservice_connector.messaging.nats.subscriber import NatsSubscriber
from microservice_connector.settings import Settings

STREAM, SUBJECT = "CART", "cart.events"
ACK_WAIT_S, MAX_ACK_PENDING = 30.0, 1000  # NatsSubscriber.create's defaults
FETCH_WAIT_S = 0.5  # Consumer's default


async def publish_events(js: JetStreamContext, events: int, carts: int) -> dict[str, list[int]]:
    """Publish the cart events; returns each cart's quantities in version order."""
    recorded, quantities = cart_events(events, carts)
    futures = []
    for event in recorded:
        headers = {**message_headers(event), MSG_ID_HEADER: event.event_id}
        futures.append(await js.publish_async(SUBJECT, event.event_data, headers=headers))
        if len(futures) == 500:
            await asyncio.gather(*futures)
            futures = []
    await asyncio.gather(*futures)
    return quantities


async def consume_raw(js: JetStreamContext, events: int, batch: int) -> tuple[float, int]:
    """Seconds for a raw durable pull consumer to fetch and ack `events` messages."""
    config = ConsumerConfig(
        name="rawref",
        durable_name="rawref",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
        max_ack_pending=MAX_ACK_PENDING,
        filter_subject=SUBJECT,
    )
    await js.add_consumer(STREAM, config)
    subscription = await js.pull_subscribe_bind("rawref", stream=STREAM)
    acked = 0
    start = time.perf_counter()
    while acked < events:
        try:
            messages = await subscription.fetch(batch, timeout=FETCH_WAIT_S)
        except (NatsTimeoutError, FetchTimeoutError):
            break  # nothing more came: the count check below reports it
        for message in messages:
            await message.ack()
        acked += len(messages)
    seconds = time.perf_counter() - start
    await subscription.unsubscribe()
    return seconds, acked


async def consume_billing(
    js: JetStreamContext, settings: Settings, events: int, batch: int
) -> tuple[float, Counter[str]]:
    """Seconds for billing's consumer to apply `events` messages, and every outcome's count."""
    repository = open_billing_repository(settings)
    try:
        # As billing runs on SQLite: each batch applied on the event loop.
        handler = CartEventHandler(
            BillingLedger(repository), default_registry(), apply_on_loop=True
        )
        subscriber = await NatsSubscriber.create(
            js, stream=STREAM, subject=SUBJECT, durable="billing"
        )
        outcomes: Counter[str] = Counter()
        stop = asyncio.Event()

        def on_outcome(_: Delivery, outcome: Settlement) -> None:
            label = outcome.label if isinstance(outcome, Ack) else type(outcome).__name__
            outcomes[label] += 1
            if outcomes["applied"] >= events:
                stop.set()

        pipeline = chain(  # as billing_service.main wires it
            handler,
            log_outcomes(),
            dead_letter(NatsDeadLetters(js), max_attempts=MAX_ATTEMPTS),
            retry_with_backoff(),
            recover,
        )
        consumer = Consumer(subscriber, pipeline, batch_size=batch, on_outcome=on_outcome)
        start = time.perf_counter()
        with contextlib.suppress(TimeoutError):  # the checks below report what is missing
            await asyncio.wait_for(consumer.run(stop), timeout=max(60.0, events / 200))
        seconds = time.perf_counter() - start
        await subscriber.close()
    finally:
        repository.close()
    return seconds, outcomes


async def run(args: argparse.Namespace, folder: Path) -> int:
    settings = Settings(data_dir=folder / "billing", sqlite_synchronous=args.synchronous)
    problems: list[str] = []
    with NatsServer(folder / "nats") as server:
        nc = await connect_nats([server.url], name="bench-consume")
        try:
            js = nc.jetstream()
            await ensure_stream(js, STREAM, [SUBJECT])
            await ensure_stream(js, "DEADLETTER", ["deadletter.>"])
            quantities = await publish_events(js, args.events, args.carts)
            held = await stream_messages(js, STREAM)
            print(
                f"stream {STREAM}: {held} messages over {args.carts} carts; fetch batch "
                f"{args.batch}; billing SQLite WAL synchronous={settings.sqlite_synchronous}"
            )
            if held != args.events:
                problems.append(f"{STREAM} holds {held} messages, expected {args.events}")

            raw_seconds, raw_acked = await consume_raw(js, args.events, args.batch)
            billing_seconds, outcomes = await consume_billing(js, settings, args.events, args.batch)
            for durable in ("rawref", "billing"):
                info = await js.consumer_info(STREAM, durable)
                if info.num_pending or info.num_ack_pending:
                    problems.append(
                        f"consumer {durable}: {info.num_pending} pending, "
                        f"{info.num_ack_pending} unacked"
                    )
        finally:
            await nc.close()
    if raw_acked != args.events:
        problems.append(f"raw consumer acked {raw_acked}, expected {args.events}")
    if outcomes["applied"] != args.events or sum(outcomes.values()) != args.events:
        problems.append(f"billing outcomes {dict(outcomes)}, expected {args.events} applied")
    problems += check_bills(settings, quantities)

    applied = outcomes["applied"]
    print(rate_header())
    print(rate_row(f"raw nats-py pull fetch({args.batch}) + ack", raw_acked, raw_seconds))
    print(rate_row(f"billing Consumer + CartEventHandler, {args.batch}", applied, billing_seconds))
    ratio = (applied / billing_seconds) / (raw_acked / raw_seconds)
    print(f"ratio: {ratio:.2f} of raw (target ≥ 0.40)")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="cart events to consume")
    parser.add_argument("--carts", type=int, default=1_000, help="carts the events spread over")
    parser.add_argument("--batch", type=int, default=256, help="fetch batch size, both sides")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-consume-") as folder:
        return asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
