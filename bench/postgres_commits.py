"""PostgreSQL's append rate as cart instances meet it: does a second and third instance add
appends, or queue behind the first? (docs/scaling.md, DESIGN §5)

Each store is a `GroupCommitStore(SqlEventStore(url))` in a process of its own, as one cart
instance runs it (`--one-process` puts them all in this one, where they share its interpreter
lock); its callers are asyncio tasks appending one event at a time to a cart of their own.
Two comparisons, each measured side by side in one run (`--rounds` rounds, interleaved, each
configuration on a fresh schema of `--postgres` for `--seconds` s):

* fixed load per instance: `--stores` stores with `--per-store` callers each, against 1
  store with `--per-store` callers (target >= 2x: instances add appends);
* the same `--callers` callers split over `--stores` stores, against 1 store with all of
  them (target >= 0.9x: splitting a load over instances costs little).

Prints appends/s per configuration and round with the 1-minute load average while it ran,
and each comparison's ratio round by round with their median: the machine is shared, so
read the ratios, not the rates. It also prints the cores of the machine each configuration
kept busy (`/proc/stat`: run it with nothing else running, the server on this machine):
three stores cannot get much more than the machine's cores over what one store keeps busy
times its rate, so it prints that ceiling for the fixed-load ratio.
`--one-per-transaction` adds the rate of `SqlEventStore.append` in a loop, one commit each.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from _support import busy_between, machine_busy
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, GroupCommitStore, SqlEventStore
from support.postgres import with_options

NOW = datetime(2026, 11, 25, tzinfo=UTC)
STARTUP_TIMEOUT_S = 60.0


def request(cart: str, version: int) -> AppendRequest:
    event = NewEvent("ItemAdded", ItemAdded(cart, "item-001", 1, NOW), NOW)
    return AppendRequest(cart, "ShoppingCart", version, [event])


def one_per_transaction(url: str, seconds: float) -> tuple[float, float]:
    store = SqlEventStore(url)
    try:
        done, deadline = 0, time.perf_counter() + seconds
        busy_before, started = machine_busy(), time.perf_counter()
        while time.perf_counter() < deadline:
            store.append(request(f"solo-{done}", 0))
            done += 1
        return done / (time.perf_counter() - started), busy_cores(busy_before)
    finally:
        store.close()


async def appended(opened: list[GroupCommitStore], callers: int, seconds: float) -> int:
    """How many appends `callers` tasks, spread over the `opened` stores, each appending to
    a cart of its own one event at a time, got done in `seconds`."""
    deadline = time.perf_counter() + seconds
    counts = [0] * callers

    async def caller(index: int) -> None:
        store = opened[index % len(opened)]
        cart, version = f"c{index}-{uuid.uuid4().hex[:6]}", 0
        while time.perf_counter() < deadline:
            await store.append(request(cart, version))
            version += 1
            counts[index] += 1

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return sum(counts)


async def warmed(url: str, stores: int) -> list[GroupCommitStore]:
    """`stores` stores on `url`, each with its connection open before any clock starts."""
    opened = [GroupCommitStore(SqlEventStore(url)) for _ in range(stores)]
    for store in opened:
        await store.append(request(f"warm-{uuid.uuid4().hex[:8]}", 0))
    return opened


async def in_one_process(
    url: str, stores: int, callers: int, seconds: float
) -> tuple[float, float]:
    """Appends/s of `callers` over `stores` stores in this process (sharing its interpreter
    lock), and the machine's cores kept busy meanwhile."""
    opened = await warmed(url, stores)
    busy_before, started = machine_busy(), time.perf_counter()
    count = await appended(opened, callers, seconds)
    elapsed, busy = time.perf_counter() - started, busy_cores(busy_before)
    for store in opened:
        store.close()
    return count / elapsed, busy


def in_processes(url: str, stores: int, callers: int, seconds: float) -> tuple[float, float]:
    """Appends/s of `callers` over `stores` stores, each store in a process of its own as
    an instance runs it, all started together; and the machine's cores kept busy meanwhile."""
    context = multiprocessing.get_context("spawn")
    started, finished = context.Barrier(stores + 1), context.Barrier(stores + 1)
    results: multiprocessing.Queue[tuple[int, float]] = context.Queue()
    shares = [callers // stores + (i < callers % stores) for i in range(stores)]
    processes = [
        context.Process(
            target=instance, args=(url, share, seconds, started, finished, results), daemon=True
        )
        for share in shares
    ]
    for process in processes:
        process.start()
    try:
        started.wait(timeout=STARTUP_TIMEOUT_S)
        busy_before = machine_busy()
        outcomes = [results.get(timeout=seconds + STARTUP_TIMEOUT_S) for _ in processes]
        busy = busy_cores(busy_before)
        finished.wait(timeout=STARTUP_TIMEOUT_S)
    finally:
        for process in processes:
            process.join(timeout=STARTUP_TIMEOUT_S)
            process.kill()
            process.join()
    return sum(count / taken for count, taken in outcomes), busy


def instance(
    url: str,
    callers: int,
    seconds: float,
    started: BarrierType,
    finished: BarrierType,
    results: multiprocessing.Queue[tuple[int, float]],
) -> None:
    """One instance's process: a warmed store, `callers` appending once all are `started`;
    puts (appends, seconds), and closes the store once all are `finished`."""

    async def run() -> None:
        (store,) = await warmed(url, 1)
        await asyncio.to_thread(started.wait, STARTUP_TIMEOUT_S)
        clock = time.perf_counter()
        count = await appended([store], callers, seconds)
        results.put((count, time.perf_counter() - clock))
        await asyncio.to_thread(finished.wait, STARTUP_TIMEOUT_S)
        store.close()

    asyncio.run(run())


@dataclass
class Configuration:
    label: str
    run: Callable[[str], tuple[float, float]]
    rates: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)

    def measure(self, server: str) -> None:
        schema, url = fresh_schema(server)
        try:
            rate, busy = self.run(url)
            self.rates.append(rate)
            self.loads.append(os.getloadavg()[0])
            self.busy.append(busy)
        finally:
            drop_schema(server, schema)
        print(
            f"  {self.label:42} {self.rates[-1]:>9,.0f} appends/s"
            f"  (load {self.loads[-1]:.1f}, {busy:.2f} of {os.cpu_count()} cores busy)",
            flush=True,
        )


def busy_cores(before: tuple[float, float]) -> float:
    """How many of the machine's cores were busy, on average, since `machine_busy()` gave
    `before`."""
    return busy_between(before, machine_busy()) * (os.cpu_count() or 1)


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


def group_commit(stores: int, callers: int, seconds: float, one_process: bool) -> Configuration:
    label = f"{stores} store{'s' if stores > 1 else ''}, {callers} callers"
    if one_process:
        return Configuration(
            label, lambda url: asyncio.run(in_one_process(url, stores, callers, seconds))
        )
    return Configuration(label, lambda url: in_processes(url, stores, callers, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--per-store", type=int, default=8)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--one-per-transaction", action="store_true")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="run every store in this process, sharing its interpreter lock (the bench's"
        " way before 2026-12-06), not each in a process of its own",
    )
    args = parser.parse_args()
    one_fixed = group_commit(1, args.per_store, args.seconds, args.one_process)
    many_fixed = group_commit(
        args.stores, args.stores * args.per_store, args.seconds, args.one_process
    )
    one_shared = group_commit(1, args.callers, args.seconds, args.one_process)
    many_shared = group_commit(args.stores, args.callers, args.seconds, args.one_process)
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
    one_store = statistics.median(one_fixed.busy)
    print(
        f"ceiling: 1 store with {args.per_store} callers kept {one_store:.2f} cores busy"
        f" (median), so {args.stores} stores can reach about"
        f" {min(args.stores, (os.cpu_count() or 1) / one_store):.2f}x of it on"
        f" {os.cpu_count()} cores at the same CPU an append"
    )


if __name__ == "__main__":
    main()
