"""PostgreSQL's append rate as cart instances meet it: does a second and third instance add
appends, or queue behind the first? (docs/scaling.md, DESIGN §5)

Each store is a `GroupCommitStore(SqlEventStore(url))`, as one cart instance runs it, in this
process; its callers are asyncio tasks appending one event at a time to a cart of their own.
Two comparisons, each measured side by side in one run (`--rounds` rounds, interleaved, each
configuration on a fresh schema of `--postgres` for `--seconds` s):

* fixed load per instance: `--stores` stores with `--per-store` callers each, against 1
  store with `--per-store` callers (target >= 2x: instances add appends);
* the same `--callers` callers split over `--stores` stores, against 1 store with all of
  them (target >= 0.9x: splitting a load over instances costs little).

Prints appends/s per configuration and round with the 1-minute load average while it ran,
and each comparison's ratio round by round with their median: the machine is shared, so
read the ratios, not the rates.
`--one-per-transaction` adds the rate of `SqlEventStore.append` in a loop, one commit each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, GroupCommitStore, SqlEventStore
from support.postgres import with_options

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def request(cart: str, version: int) -> AppendRequest:
    event = NewEvent("ItemAdded", ItemAdded(cart, "item-001", 1, NOW), NOW)
    return AppendRequest(cart, "ShoppingCart", version, [event])


def one_per_transaction(url: str, seconds: float) -> float:
    store = SqlEventStore(url)
    try:
        done, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            store.append(request(f"solo-{done}", 0))
            done += 1
        return done / (time.perf_counter() - started)
    finally:
        store.close()


async def grouped(url: str, stores: int, callers: int, seconds: float) -> float:
    opened = [GroupCommitStore(SqlEventStore(url)) for _ in range(stores)]
    for store in opened:  # open each store's connection before the clock starts
        await store.append(request(f"warm-{uuid.uuid4().hex[:8]}", 0))
    deadline = time.perf_counter() + seconds
    counts = [0] * callers

    async def caller(index: int) -> None:
        store, cart, version = opened[index % stores], f"c{index}-{uuid.uuid4().hex[:6]}", 0
        while time.perf_counter() < deadline:
            await store.append(request(cart, version))
            version += 1
            counts[index] += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - started
    for store in opened:
        store.close()
    return sum(counts) / elapsed


@dataclass
class Configuration:
    label: str
    run: Callable[[str], float]
    rates: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def measure(self, server: str) -> None:
        schema, url = fresh_schema(server)
        try:
            self.rates.append(self.run(url))
            self.loads.append(os.getloadavg()[0])
        finally:
            drop_schema(server, schema)
        print(
            f"  {self.label:42} {self.rates[-1]:>9,.0f} appends/s  (load {self.loads[-1]:.1f})",
            flush=True,
        )


def fresh_schema(server: str) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return schema, with_options(server, f"-csearch_path={schema}")


def drop_schema(server: str, schema: str) -> None:
    admin = create_engine(server, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def group_commit(stores: int, callers: int, seconds: float) -> Configuration:
    return Configuration(
        f"{stores} store{'s' if stores > 1 else ''}, {callers} callers",
        lambda url: asyncio.run(grouped(url, stores, callers, seconds)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--per-store", type=int, default=8)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--one-per-transaction", action="store_true")
    args = parser.parse_args()
    one_fixed = group_commit(1, args.per_store, args.seconds)
    many_fixed = group_commit(args.stores, args.stores * args.per_store, args.seconds)
    one_shared = group_commit(1, args.callers, args.seconds)
    many_shared = group_commit(args.stores, args.callers, args.seconds)
    configurations = [one_fixed, many_fixed, one_shared, many_shared]
    if args.one_per_transaction:
        configurations.append(
            Configuration(
                "one append per transaction, 1 caller",
                lambda url: one_per_transaction(url, args.seconds),
            )
        )
    for round_ in range(1, args.rounds + 1):
        print(f"round {round_} of {args.rounds}", flush=True)
        for configuration in configurations:
            configuration.measure(args.postgres)
    print("ratios, round by round (each pair measured back to back), and their median:")
    for label, many, one, target in [
        ("fixed load per instance", many_fixed, one_fixed, 2.0),
        ("same callers split over instances", many_shared, one_shared, 0.9),
    ]:
        ratios = [a / b for a, b in zip(many.rates, one.rates, strict=True)]
        median = statistics.median(ratios)
        verdict = "meets" if median >= target else "misses"
        rounds = ", ".join(f"{ratio:.2f}x" for ratio in ratios)
        print(
            f"  {label}, {many.label} / {one.label}: {rounds};"
            f" median {median:.2f}x ({verdict} the target >= {target:g}x)"
        )


if __name__ == "__main__":
    main()
