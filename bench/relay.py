"""Outbox relay → JetStream throughput, against raw nats-py pipelined publishing (DESIGN §5).

Setup (not timed): a private nats-server (JetStream, file storage) on a free loopback port; a
fresh SQLite event store (WAL, `synchronous=FULL` by default) filled through
`SqlEventStore.append_batch` with `--events` ItemAdded events spread round-robin over
`--carts` carts, so the outbox holds that many pending rows in commit order.

* reference: the same payloads with the same headers (the outbox row's headers plus
  `Nats-Msg-Id` = event id, exactly what `NatsPublisher` sends) published with
  `js.publish_async` in windows of `--window` messages, awaiting every window's acks before the
  next; to a fresh stream `RAWREF` (subject `raw.cart.events`, same config as `CART`).
* ours: `OutboxRelay(store.outbox, NatsPublisher(js), batch_size=--batch)`, calling
  `relay_once()` until a round finds nothing pending. Each round reads a batch of pending rows,
  publishes them all in flight at once, waits for the acks and marks the rows published (one
  SQLite commit per round). Stream `CART` (subject `cart.events`) is fresh too.

Both sides use one connection each, in this process. The machine is shared and noisy, so the
script runs `--rounds` rounds (default 3), each with a freshly filled store and both streams
deleted and recreated, raw then relay; it prints every round and takes the ratio of the best
rate of each side. After each side of each round its stream must hold exactly `--events`
messages, and the outbox none pending; the script exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from _support import NatsServer, rate_header, rate_row, stream_messages
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import SqlEventStore
from microservice_connector.eventstore.engine import SqliteSynchronous
from microservice_connector.eventstore.outbox import OutboxRow
from microservice_connector.eventstore.port import AppendRequest
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.nats.connection import connect_nats, ensure_stream
from microservice_connector.messaging.nats.publisher import MSG_ID_HEADER, NatsPublisher

ITEMS = ("item-001", "item-002", "item-003", "item-004", "item-005")
FILL_CHUNK = 1_000  # append requests per fill transaction


def fill(store: SqlEventStore, events: int, carts: int) -> None:
    """`events` ItemAdded events, one per cart in turn, committed `FILL_CHUNK` at a time."""
    cart_ids = [f"cart-{uuid.uuid4().hex[:12]}" for _ in range(carts)]
    versions = dict.fromkeys(cart_ids, 0)
    requests: list[AppendRequest] = []
    for k in range(events):
        cart = cart_ids[k % carts]
        now = datetime.now(UTC)
        correlation = str(uuid.uuid4())
        payload = ItemAdded(cart, ITEMS[k % len(ITEMS)], 1 + k % 3, now)
        event = NewEvent(
            "ItemAdded", payload, now, correlation_id=correlation, causation_id=correlation
        )
        requests.append(AppendRequest(cart, "ShoppingCart", versions[cart], [event]))
        versions[cart] += 1
        if len(requests) == FILL_CHUNK or k == events - 1:
            for result in store.append_batch(requests):
                if not isinstance(result, list):
                    raise RuntimeError(f"fill failed: {result}")
            requests = []


async def publish_raw(
    js: JetStreamContext, subject: str, rows: list[OutboxRow], window: int
) -> float:
    """Seconds to publish every row with `publish_async`, `window` acks outstanding at most."""
    messages = [(row.payload, {**row.headers, MSG_ID_HEADER: row.event_id}) for row in rows]
    start = time.perf_counter()
    for first in range(0, len(messages), window):
        futures = [
            await js.publish_async(subject, payload, headers=headers)
            for payload, headers in messages[first : first + window]
        ]
        await asyncio.gather(*futures)
    return time.perf_counter() - start


async def relay_all(relay: OutboxRelay) -> tuple[float, int, int]:
    """Seconds to drain the outbox with `relay_once`, and the rows published and failed."""
    published = failed = 0
    start = time.perf_counter()
    while True:
        round_ = await relay.relay_once()
        published += round_.published
        failed += round_.failed
        if round_.failed or round_.published == 0:
            break
    return time.perf_counter() - start, published, failed


@dataclass
class Round:
    """One round's timings (seconds) for both sides, with what each put in its stream."""

    raw_seconds: float
    raw_count: int
    relay_seconds: float
    relay_count: int


async def one_round(
    args: argparse.Namespace, folder: Path, raw_js: JetStreamContext, relay_js: JetStreamContext
) -> tuple[Round, list[str]]:
    """Fill a fresh store, publish its rows raw to a fresh RAWREF, relay them to a fresh CART."""
    sync = cast(SqliteSynchronous, args.synchronous)
    for js, stream in ((raw_js, "RAWREF"), (relay_js, "CART")):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    await ensure_stream(raw_js, "RAWREF", ["raw.cart.events"])
    await ensure_stream(relay_js, "CART", ["cart.events"])
    store = SqlEventStore(f"sqlite:///{folder / 'events.db'}", sqlite_synchronous=sync)
    problems: list[str] = []
    try:
        fill(store, args.events, args.carts)
        rows = store.outbox.pending(args.events + 1)  # the reference's payloads and headers
        expected = args.events

        raw_seconds = await publish_raw(raw_js, "raw.cart.events", rows, args.window)
        raw_count = await stream_messages(raw_js, "RAWREF")
        if raw_count != expected or len(rows) != expected:
            problems.append(f"RAWREF holds {raw_count} of {len(rows)} rows, expected {expected}")

        relay = OutboxRelay(store.outbox, NatsPublisher(relay_js), batch_size=args.batch)
        relay_seconds, published, failed = await relay_all(relay)
        relay_count = await stream_messages(relay_js, "CART")
        status = store.outbox.status()
    finally:
        store.close()
    if failed:
        problems.append(f"relay: {failed} rows not acknowledged")
    if published != expected or relay_count != expected:
        problems.append(f"relay published {published}, CART holds {relay_count} of {expected}")
    if status.pending != 0 or status.published != expected:
        problems.append(f"outbox: {status.pending} pending, {status.published} published")
    return Round(raw_seconds, raw_count, relay_seconds, relay_count), problems


async def run(args: argparse.Namespace, folder: Path) -> int:
    print(
        f"{args.rounds} rounds of {args.events} outbox rows over {args.carts} carts; SQLite WAL "
        f"synchronous={args.synchronous}; relay batch {args.batch}, raw window {args.window}"
    )
    rounds: list[Round] = []
    problems: list[str] = []
    with NatsServer(folder / "nats") as server:
        raw_nc = await connect_nats([server.url], name="bench-raw")
        relay_nc = await connect_nats([server.url], name="bench-relay")
        try:
            for number in range(args.rounds):
                round_folder = folder / f"round-{number}"
                round_folder.mkdir()
                result, found = await one_round(
                    args, round_folder, raw_nc.jetstream(), relay_nc.jetstream()
                )
                rounds.append(result)
                problems += [f"round {number + 1}: {problem}" for problem in found]
        finally:
            await raw_nc.close()
            await relay_nc.close()

    raw_label = f"raw nats-py publish_async, window {args.window}"
    relay_label = f"OutboxRelay.relay_once, batch {args.batch}"
    print(rate_header() + "  round")
    for number, r in enumerate(rounds, start=1):
        print(rate_row(raw_label, r.raw_count, r.raw_seconds) + f"  {number}")
        print(rate_row(relay_label, r.relay_count, r.relay_seconds) + f"  {number}")
    raw_best = max(r.raw_count / r.raw_seconds for r in rounds)
    relay_best = max(r.relay_count / r.relay_seconds for r in rounds)
    per_round = ", ".join(
        f"{(r.relay_count / r.relay_seconds) / (r.raw_count / r.raw_seconds):.2f}" for r in rounds
    )
    print(f"best of {len(rounds)}: raw {raw_best:,.0f}/s, relay {relay_best:,.0f}/s")
    print(f"ratio: {relay_best / raw_best:.2f} of raw (target ≥ 0.50); per round: {per_round}")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="outbox rows to relay")
    parser.add_argument("--carts", type=int, default=1_000, help="carts the events spread over")
    parser.add_argument("--batch", type=int, default=500, help="relay batch size")
    parser.add_argument("--window", type=int, default=500, help="raw publishes in flight")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, sides alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as folder:
        return asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
