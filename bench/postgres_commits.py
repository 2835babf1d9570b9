"""PostgreSQL's commit rate as the cart event store meets it: the ceiling docs/scaling.md
talks about.

* one append per transaction, one caller: `SqlEventStore.append` in a loop (each commit
  waits for its WAL flush, and for the writers' advisory lock);
* group commit: `GroupCommitStore.append` from `--callers` asyncio callers, appends waiting
  together sharing a transaction, as one cart instance does;
* `--stores` group-commit stores on the same database, as that many cart instances in one
  process: their transactions take turns on the advisory lock.

Each on a fresh schema of `--postgres` for `--seconds` s. Prints appends/s (in the first, also
commits/s).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import (
    AppendRequest,
    GroupCommitStore,
    SqlEventStore,
)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--stores", type=int, default=3)
    args = parser.parse_args()
    runs = [
        (
            "one append per transaction, 1 caller",
            lambda url: one_per_transaction(url, args.seconds),
        ),
        (
            f"group commit, 1 store, {args.callers} callers",
            lambda url: asyncio.run(grouped(url, 1, args.callers, args.seconds)),
        ),
        (
            f"group commit, {args.stores} stores, {args.callers} callers",
            lambda url: asyncio.run(grouped(url, args.stores, args.callers, args.seconds)),
        ),
    ]
    for label, run in runs:
        schema, url = fresh_schema(args.postgres)
        try:
            print(f"{label:45} {run(url):>9,.0f} appends/s", flush=True)
        finally:
            drop_schema(args.postgres, schema)


if __name__ == "__main__":
    main()
