"""Loading a 10,000-event cart, against the `eventsourcing` library (DESIGN §5).

Each figure is measured in this one run, on fresh SQLite files (WAL) in a temporary folder:

* replay, no snapshot: `CartService.get_cart` with its cache off and snapshots off, so it
  reads all 10,000 events from SQLite, decodes them and folds them into a `ShoppingCart`;
  against an `eventsourcing` `Application` on `eventsourcing.sqlite` doing `repository.get`
  of an aggregate with the same 10,000 events (cache off, snapshotting off). Ratio: their
  time over ours, so > 1 means we replay faster.
* load with snapshots: the same `get_cart` with snapshots on (`MSC_SNAPSHOT_EVERY=100`): the
  snapshot at version 10,000 and no tail, and the worst case a 100-interval leaves, a
  snapshot at 9,901 and a tail of 99 events.
* Protobuf size: the same 10,000 payloads encoded by each codec, mean bytes per event.

Times are medians of `--repeat` loads after one warm-up. Checks that every side rebuilt the
same cart, and exits non-zero if not.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import cast

from eventsourcing.application import Application

from microservice_connector.cart_service.application import CartService, CartView
from microservice_connector.cart_service.application.cart_snapshots import cart_from, snapshot_of
from microservice_connector.cart_service.domain import ShoppingCart
from microservice_connector.cart_service.infrastructure.snapshot_codec import JsonCartStateCodec
from microservice_connector.events import (
    ItemAdded,
    ItemRemoved,
    NewEvent,
    codec_named,
    default_registry,
)
from microservice_connector.events.cart import CartEvent
from microservice_connector.events.codecs import Serializer
from microservice_connector.eventstore import AppendRequest, GroupCommitStore, SqlEventStore
from reference_cart import Cart

CART = "cart-10k"
ITEMS = [f"item-{n:03d}" for n in range(20)]
START = datetime(2026, 1, 1, tzinfo=UTC)
CODEC = JsonCartStateCodec()


def history(count: int, seed: int = 1) -> list[CartEvent]:
    """`count` adds and removes that a cart accepts (never removing what it lacks)."""
    rng, held, events = random.Random(seed), dict.fromkeys(ITEMS, 0), list[CartEvent]()
    for n in range(count):
        at = START + timedelta(milliseconds=n)
        item = rng.choice(ITEMS)
        if held[item] and rng.random() < 0.3:
            quantity = rng.randint(1, held[item])
            held[item] -= quantity
            events.append(ItemRemoved(CART, item, quantity, at))
        else:
            quantity = rng.randint(1, 5)
            held[item] += quantity
            events.append(ItemAdded(CART, item, quantity, at))
    return events


def fill(path: Path, events: list[CartEvent], serializer: Serializer) -> SqlEventStore:
    store = SqlEventStore(f"sqlite:///{path}", codec=codec_named(serializer), outbox_topic=None)
    for start in range(0, len(events), 1000):
        batch = [NewEvent(type(e).__name__, e, e.timestamp) for e in events[start : start + 1000]]
        store.append(AppendRequest(CART, "ShoppingCart", start, batch))
    return store


def median_ms(load: Callable[[], object], repeat: int) -> float:
    load()  # warm-up: page cache, decoders, code paths
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def ours(
    store: SqlEventStore, *, snapshots: bool, repeat: int, loop: asyncio.AbstractEventLoop
) -> tuple[float, CartView]:
    """Median ms of a cold `get_cart` (no cache) through the group-commit store."""
    service = CartService(
        GroupCommitStore(store),
        cache_size=0,
        snapshots=store.snapshots if snapshots else None,
        snapshot_codec=CODEC,
        snapshot_every=100,
    )

    def load() -> CartView:
        return loop.run_until_complete(cast(Awaitable[CartView], service.get_cart(CART)))

    return median_ms(load, repeat), load()


def direct(store: SqlEventStore, repeat: int) -> float:
    """Median ms of the same load called directly on this thread: snapshot row, tail, fold.
    The gap to `ours` is the event loop and worker-thread hand-offs, which a busy machine
    stretches."""
    registry = default_registry()

    def load() -> ShoppingCart:
        snapshot = store.snapshots.load_snapshot(CART)
        cart = cart_from(snapshot, CODEC) if snapshot is not None else None
        assert cart is not None
        for recorded in store.load(CART, after_version=cart.version):
            cart.apply(cast(CartEvent, registry.decode(recorded)))
        return cart

    return median_ms(load, repeat)


def theirs(path: Path, events: list[CartEvent], repeat: int) -> tuple[float, dict[str, int]]:
    """Median ms of the library's `repository.get` of the same history, no cache."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    app = Application[uuid.UUID](env=env)
    cart = Cart(id=uuid.uuid4())
    for e in events[:-1]:  # the library's Created event counts as the first of 10,000
        if isinstance(e, ItemAdded):
            cart.add_item(e.item_id, e.quantity)
        else:
            cart.remove_item(e.item_id, e.quantity)
    app.save(cart)
    ms = median_ms(lambda: app.repository.get(cart.id), repeat)
    loaded = cast(Cart, app.repository.get(cart.id))
    app.close()
    return ms, loaded.items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="events in the cart")
    parser.add_argument("--repeat", type=int, default=21, help="timed loads per figure")
    args = parser.parse_args()
    events = history(args.events)
    expected = ShoppingCart.replay(CART, events)
    loop = asyncio.new_event_loop()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as folder:
        json_store = fill(Path(folder) / "json.db", events, "json")
        protobuf_store = fill(Path(folder) / "protobuf.db", events, "protobuf")
        replay_ms, view = ours(json_store, snapshots=False, repeat=args.repeat, loop=loop)
        protobuf_ms, protobuf_view = ours(
            protobuf_store, snapshots=False, repeat=max(5, args.repeat // 3), loop=loop
        )
        es_ms, es_items = theirs(Path(folder) / "eventsourcing.db", events, args.repeat)

        snapshots = json_store.snapshots
        snapshots.save_snapshot(snapshot_of(expected, datetime.now(UTC), CODEC))
        snap_ms, snap_view = ours(json_store, snapshots=True, repeat=args.repeat, loop=loop)
        snap_direct_ms = direct(json_store, args.repeat)
        worst = len(events) - 99
        snapshots.delete_snapshots()
        snapshots.save_snapshot(
            snapshot_of(ShoppingCart.replay(CART, events[:worst]), datetime.now(UTC), CODEC)
        )
        tail_ms, tail_view = ours(json_store, snapshots=True, repeat=args.repeat, loop=loop)
        tail_direct_ms = direct(json_store, args.repeat)
        json_store.close()
        protobuf_store.close()
    loop.close()

    for side, found in [
        ("replay", view),
        ("protobuf replay", protobuf_view),
        ("snapshot", snap_view),
        ("snapshot + 99", tail_view),
    ]:
        if (found.version, found.items) != (expected.version, expected.items):
            problems.append(f"{side}: cart v{found.version} differs from the history's")
    if es_items != ShoppingCart.replay(CART, events[:-1]).items:
        problems.append("eventsourcing: cart differs from the history's")

    json_codec, protobuf_codec = codec_named("json"), codec_named("protobuf")
    json_bytes = sum(len(json_codec.encode(type(e).__name__, e)) for e in events)
    protobuf_bytes = sum(len(protobuf_codec.encode(type(e).__name__, e)) for e in events)

    n = len(events)
    print(f"a cart of {n:,} events (adds and removes over {len(ITEMS)} items), SQLite WAL")
    print(f"{'what':<52} {'ms':>8} {'events/s':>11}")
    rows = [
        ("ours: replay, no snapshot (JSON)", replay_ms),
        ("ours: replay, no snapshot (Protobuf)", protobuf_ms),
        (f"eventsourcing {version('eventsourcing')}: repository.get, no snapshot", es_ms),
    ]
    for what, ms in rows:
        print(f"{what:<52} {ms:>8.2f} {n / ms * 1000:>11,.0f}")
    print(f"{'ours: load with snapshot at v' + str(n) + ' (no tail)':<52} {snap_ms:>8.3f}")
    print(f"{'ours: load with snapshot at v' + str(worst) + ' + 99 events':<52} {tail_ms:>8.3f}")
    print(f"{'  the same, called directly (no event loop)':<52} {snap_direct_ms:>8.3f}")
    print(f"{'  the same + 99 events, called directly':<52} {tail_direct_ms:>8.3f}")
    print(f"replay ratio: {es_ms / replay_ms:.2f}x the library's rate (target >= 2x)")
    print(f"load with snapshots: {max(snap_ms, tail_ms):.3f} ms at worst (target <= 1 ms)")
    print(
        f"size per event: JSON {json_bytes / n:.1f} B, Protobuf {protobuf_bytes / n:.1f} B "
        f"= {protobuf_bytes / json_bytes:.0%} of JSON (target <= 40%)"
    )
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
