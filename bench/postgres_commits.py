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
read the ratios, not the rates. With the server on this machine it also prints the cores
each configuration kept busy (this process's CPU and every `postgres` process's, over the
run): a fixed-load ratio cannot exceed the machine's cores over what one store keeps busy.
`--one-per-transaction` adds the rate of `SqlEventStore.append` in a loop, one commit each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from _support import cpu_seconds
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, GroupCommitStore, SqlEventStore
from support.postgres import with_options

NOW = datetime(2026, 11, 25, tzinfo=UTC)
STARTUP_TIMEOUT_S = 60.0


def request(cart: str, version: int) -> AppendRequest:
    event = NewEvent("ItemAdded", ItemAdded(cart, "item-001", 1, NOW), NOW)
    return AppendRequest(cart, "ShoppingCart", version, [event])


def one_per_transaction(url: str, seconds: float) -> tuple[float, None]:
    store = SqlEventStore(url)
    try:
        done, deadline = 0, time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            store.append(request(f"solo-{done}", 0))
            done += 1
        return done / (time.perf_counter() - started), None
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
) -> tuple[float, float | None]:
    """Appends/s of `callers` over `stores` stores in this process (sharing its interpreter
    lock), and the cores kept busy meanwhile."""
    opened = await warmed(url, stores)
    cpu_before, started = busy_cpu_seconds(), time.perf_counter()
    count = await appended(opened, callers, seconds)
    cpu_after, elapsed = busy_cpu_seconds(), time.perf_counter() - started
    for store in opened:  # after the count: a closed connection's server process is gone
        store.close()
    busy = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / elapsed
    return count / elapsed, busy


def in_processes(url: str, stores: int, callers: int, seconds: float) -> tuple[float, float | None]:
    """Appends/s of `callers` over `stores` stores, each store in a process of its own as
    an instance runs it, all started together; and the cores kept busy meanwhile."""
    context = multiprocessing.get_context("spawn")
    started, finished = context.Barrier(stores + 1), context.Barrier(stores + 1)
    results: multiprocessing.Queue[tuple[int, float, float]] = context.Queue()
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
        server_before, clock = postgres_cpu_seconds(), time.perf_counter()
        outcomes = [results.get(timeout=seconds + STARTUP_TIMEOUT_S) for _ in processes]
        server_after, elapsed = postgres_cpu_seconds(), time.perf_counter() - clock
        finished.wait(timeout=STARTUP_TIMEOUT_S)
    finally:
        for process in processes:
            process.join(timeout=STARTUP_TIMEOUT_S)
            process.kill()
    rate = sum(count / taken for count, taken, _ in outcomes)
    if server_before is None or server_after is None:
        return rate, None
    clients = sum(cpu / taken for _, taken, cpu in outcomes)
    return rate, clients + (server_after - server_before) / elapsed


def instance(
    url: str,
    callers: int,
    seconds: float,
    started: BarrierType,
    finished: BarrierType,
    results: multiprocessing.Queue[tuple[int, float, float]],
) -> None:
    """One instance's process: a warmed store, `callers` appending once all are `started`;
    puts (appends, seconds, CPU seconds), and closes the store once all are `finished`."""

    async def run() -> None:
        (store,) = await warmed(url, 1)
        await asyncio.to_thread(started.wait, STARTUP_TIMEOUT_S)
        cpu, clock = time.process_time(), time.perf_counter()
        count = await appended([store], callers, seconds)
        results.put((count, time.perf_counter() - clock, time.process_time() - cpu))
        await asyncio.to_thread(finished.wait, STARTUP_TIMEOUT_S)
        store.close()

    asyncio.run(run())


@dataclass
class Configuration:
    label: str
    run: Callable[[str], tuple[float, float | None]]
    rates: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)

    def measure(self, server: str) -> None:
        schema, url = fresh_schema(server)
        try:
            rate, busy = self.run(url)
            self.rates.append(rate)
            self.loads.append(os.getloadavg()[0])
            if busy is not None:
                self.busy.append(busy)
        finally:
            drop_schema(server, schema)
        cores = "" if busy is None else f", {busy:.2f} of {os.cpu_count()} cores busy"
        print(
            f"  {self.label:42} {self.rates[-1]:>9,.0f} appends/s"
            f"  (load {self.loads[-1]:.1f}{cores})",
            flush=True,
        )


def busy_cpu_seconds() -> float | None:
    """CPU seconds used so far by this process (every thread) and the database server;
    None when the server's cannot be read."""
    server = postgres_cpu_seconds()
    return None if server is None else time.process_time() + server


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by every `postgres` process of this machine; None when there
    is none to read (a server elsewhere, or no `/proc`), so that no figure leaves it out."""
    total, found = 0.0, False
    for name in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if name.read_text().strip() == "postgres":
                total += cpu_seconds(int(name.parent.name))
                found = True
    return total if found else None


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
    if one_fixed.busy:
        one_store = statistics.median(one_fixed.busy)
        print(
            f"ceiling: 1 store with {args.per_store} callers kept {one_store:.2f} cores busy"
            f" (median), so {args.stores} stores can reach at most"
            f" {min(args.stores, (os.cpu_count() or 1) / one_store):.2f}x of it on"
            f" {os.cpu_count()} cores"
        )


if __name__ == "__main__":
    main()
