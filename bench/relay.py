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

* the same two sides again against a second nats-server that `fsync`s every write
  (`sync_interval: always`, from the configuration file `msc up` writes when
  `MSC_NATS_SYNC_ALWAYS=true`): what a broker that fsyncs every message costs the relay.

Each side uses one connection, in this process. The machine is shared and noisy, so the
script runs `--rounds` rounds (default 3), each with freshly filled stores and the streams
deleted and recreated, raw then relay, default sync then always-sync; it prints every round
and takes the ratio of the best rate of each side. After each side of each round its stream
must hold exactly `--events` messages, and the outbox none pending; the script exits
non-zero otherwise.
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

from nats.aio.client import Client
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
from microservice_connector.runtime.nats_server_config import write_nats_server_config
from microservice_connector.runtime.system import free_port

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
    """One round's timings (seconds) for every side, with what each put in its stream."""

    raw_seconds: float
    raw_count: int
    relay_seconds: float
    relay_count: int
    synced_raw_seconds: float
    synced_raw_count: int
    synced_relay_seconds: float
    synced_relay_count: int


async def fresh_streams(js: JetStreamContext) -> None:
    """Delete and recreate RAWREF and CART on the server `js` talks to."""
    for stream in ("RAWREF", "CART"):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    await ensure_stream(js, "RAWREF", ["raw.cart.events"])
    await ensure_stream(js, "CART", ["cart.events"])


async def one_server(
    args: argparse.Namespace, folder: Path, raw_js: JetStreamContext, relay_js: JetStreamContext
) -> tuple[tuple[float, int, float, int], list[str]]:
    """Fill a fresh store, publish its rows raw to a fresh RAWREF, relay them to a fresh CART;
    `raw_js` and `relay_js` are two connections to one server."""
    sync = cast(SqliteSynchronous, args.synchronous)
    await fresh_streams(raw_js)
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
    return (raw_seconds, raw_count, relay_seconds, relay_count), problems


async def connections(url: str, name: str) -> tuple[Client, Client]:
    """Two connections to one server: the raw side's and the relay's."""
    return (
        await connect_nats([url], name=f"bench-raw-{name}"),
        await connect_nats([url], name=f"bench-relay-{name}"),
    )


async def run(args: argparse.Namespace, folder: Path) -> int:
    print(
        f"{args.rounds} rounds of {args.events} outbox rows over {args.carts} carts; SQLite WAL "
        f"synchronous={args.synchronous}; relay batch {args.batch}, raw window {args.window}; "
        "JetStream with its default sync (every 2 min) and with sync_interval: always"
    )
    rounds: list[Round] = []
    problems: list[str] = []
    (folder / "synced").mkdir()
    config = write_nats_server_config(folder / "synced", sync_always=True, monitor_port=free_port())
    with NatsServer(folder / "nats") as default, NatsServer(folder / "synced", config) as synced:
        plain = await connections(default.url, "default")
        always = await connections(synced.url, "always")
        try:
            for number in range(args.rounds):
                sides = []
                for side, (raw_nc, relay_nc) in (("default", plain), ("always", always)):
                    side_folder = folder / f"round-{number}-{side}"
                    side_folder.mkdir()
                    timings, trouble = await one_server(
                        args, side_folder, raw_nc.jetstream(), relay_nc.jetstream()
                    )
                    sides.append(timings)
                    problems += [f"round {number + 1}, {side} sync: {p}" for p in trouble]
                rounds.append(Round(*sides[0], *sides[1]))
        finally:
            for nc in (*plain, *always):
                await nc.close()

    columns = (
        (f"raw nats-py publish_async, window {args.window}", "raw_count", "raw_seconds"),
        (f"OutboxRelay.relay_once, batch {args.batch}", "relay_count", "relay_seconds"),
        ("raw, sync_interval: always", "synced_raw_count", "synced_raw_seconds"),
        ("OutboxRelay, sync_interval: always", "synced_relay_count", "synced_relay_seconds"),
    )
    print(rate_header() + "  round")
    for number, r in enumerate(rounds, start=1):
        for label, count, seconds in columns:
            print(rate_row(label, getattr(r, count), getattr(r, seconds)) + f"  {number}")
    best = {
        count: max(getattr(r, count) / getattr(r, seconds) for r in rounds)
        for _, count, seconds in columns
    }
    raw_best, relay_best = best["raw_count"], best["relay_count"]
    synced_raw, synced_relay = best["synced_raw_count"], best["synced_relay_count"]
    per_round = ", ".join(
        f"{(r.relay_count / r.relay_seconds) / (r.raw_count / r.raw_seconds):.2f}" for r in rounds
    )
    print(f"best of {len(rounds)}: raw {raw_best:,.0f}/s, relay {relay_best:,.0f}/s")
    print(f"ratio: {relay_best / raw_best:.2f} of raw (target ≥ 0.50); per round: {per_round}")
    print(
        f"sync_interval: always: relay {synced_relay:,.0f}/s = {synced_relay / relay_best:.2f} "
        f"of the relay with the default sync; raw {synced_raw:,.0f}/s = "
        f"{synced_raw / raw_best:.2f} of raw; relay/raw with always-sync "
        f"{synced_relay / synced_raw:.2f}"
    )
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
