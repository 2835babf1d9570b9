"""Cart command throughput in-process on SQLite, against the `eventsourcing` library (DESIGN §5).

Both sides run the same workload, each on a fresh SQLite file in WAL mode at the same
`synchronous` level (FULL by default, `--synchronous NORMAL` for both):

* ours: `CartService.add_item` (load, decide, append event + outbox row in one transaction)
  on a `GroupCommitStore(SqlEventStore(...))`, from N concurrent asyncio tasks; it commits on
  the event loop, as the cart service does on SQLite (`MSC_SQLITE_COMMIT_ON_LOOP`, default
  true), or with `--writer-thread` on its writer thread;
* reference: an `eventsourcing` `Application` on `eventsourcing.sqlite` doing
  `repository.get` -> `Cart.add_item` -> `app.save` per command, from N threads. Its aggregate
  cache is on (ours caches too), snapshotting is off. The library never sets `synchronous`
  (it only switches to WAL), so it runs at SQLite's compiled default (FULL here); this script
  sets the level on every connection its pool opens, and checks it on both sides.

Ours runs twice: without and with an `Idempotency-Key` on every command (a fresh key each,
claimed and recorded in the command's transaction, as the HTTP layer does); the script
prints the rate with keys as a ratio of the rate without, same run.

Carts are split over the callers so no two callers touch one cart. A warm-up, not timed, adds
one item to every cart (creating it); then the timed run spreads `--commands` over the carts.
Afterwards each database is reopened cold and every cart's total quantity, and the row counts,
are checked; the script exits non-zero if anything does not add up.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal, cast

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.sqlite import SQLiteConnection, SQLiteConnectionPool

from microservice_connector.cart_service.application import CartService
from microservice_connector.cart_service.application.idempotency import IdempotentCommands
from microservice_connector.eventstore import GroupCommitStore, SqlEventStore
from reference_cart import Cart

Sync = Literal["FULL", "NORMAL"]
Layout = list[list[uuid.UUID]]  # the carts of each caller
QUANTITY = 2
ITEMS = 8  # distinct items per cart
CACHE_SIZE = 10_000
LEVELS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
UNVERIFIED = "not verified (SqlEventStore._writer is gone)"


@dataclass
class Result:
    """One side's timed run, the SQLite settings its connection had, and what went wrong."""

    side: str
    seconds: float
    pragmas: str
    problems: list[str]


def _pragmas(connection: Any) -> str:
    journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
    level = connection.execute("PRAGMA synchronous").fetchone()[0]
    return f"journal_mode={journal} synchronous={LEVELS[level]}"


def _check(path: Path, rows: dict[str, int], total: int, expected_total: int) -> list[str]:
    """Row counts per table and the total quantity over all carts, as expected or not."""
    with sqlite3.connect(path) as db:
        found = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in rows}
    problems = [f"{t}: {found[t]} rows, expected {n}" for t, n in rows.items() if found[t] != n]
    if total != expected_total:
        problems.append(f"total quantity {total}, expected {expected_total}")
    return problems


async def run_ours(
    path: Path,
    sync: Sync,
    owned: Layout,
    counts: list[int],
    *,
    keys: bool = False,
    on_loop: bool = True,
) -> Result:
    """Our `CartService` on a group-committing SQLite store, one asyncio task per caller,
    committing on the loop (`on_loop`) or on the writer thread; with `keys`, every command
    runs under a fresh idempotency key."""
    sql = SqlEventStore(f"sqlite:///{path}", sqlite_synchronous=sync)
    store = GroupCommitStore(sql, commit_on_loop=on_loop)
    service = CartService(store, cache_size=CACHE_SIZE)
    idempotent = IdempotentCommands(sql.idempotency_keys, service.get_cart)

    async def caller(carts: list[str], n: int) -> None:
        for k in range(n):
            cart, item = carts[k % len(carts)], f"item-{k % ITEMS}"
            if keys:
                with idempotent.running(str(uuid.uuid4()), "bench"):
                    await service.add_item(cart, item, QUANTITY)
            else:
                await service.add_item(cart, item, QUANTITY)

    ids = [[str(cart) for cart in carts] for carts in owned]
    try:
        await asyncio.gather(*(caller(carts, len(carts)) for carts in ids))  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(caller(carts, n) for carts, n in zip(ids, counts, strict=True)))
        seconds = time.perf_counter() - start
        writer = getattr(store.store, "_writer", None)  # private: the one writer connection
        pragmas = UNVERIFIED
        if writer is not None:
            with writer.connect() as connection:
                pragmas = _pragmas(connection.connection.dbapi_connection)
    finally:
        store.close()
    cold = GroupCommitStore(SqlEventStore(f"sqlite:///{path}", sqlite_synchronous=sync))
    reader = CartService(cold)  # empty cache: every cart is replayed from the file
    views = [await reader.get_cart(cart) for carts in ids for cart in carts]
    cold.close()
    rows = len(views) + sum(counts)  # one ItemAdded per warm-up and per timed command
    total = sum(sum(view.items.values()) for view in views)
    tables = {"events": rows, "outbox": rows, "idempotency_keys": rows if keys else 0}
    problems = _check(path, tables, total, rows * QUANTITY)
    side = "microservice_connector" + (" +keys" if keys else "")
    return Result(side, seconds, pragmas, problems)


class CartApp(Application[uuid.UUID]):
    is_snapshotting_enabled = False


def _set_synchronous_on_connect(sync: Sync) -> None:
    """eventsourcing has no connect hook, so wrap its pool's connection factory."""
    create = SQLiteConnectionPool._create_connection

    def create_with_level(pool: SQLiteConnectionPool) -> SQLiteConnection:
        connection = create(pool)
        connection._sqlite_conn.execute(f"PRAGMA synchronous={sync}")
        return connection

    SQLiteConnectionPool._create_connection = create_with_level  # type: ignore[method-assign, assignment]


def run_eventsourcing(path: Path, sync: Sync, owned: Layout, counts: list[int]) -> Result:
    """The library's get/command/save, one thread per caller, aggregate cache on."""
    _set_synchronous_on_connect(sync)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "AGGREGATE_CACHE_MAXSIZE": str(CACHE_SIZE),
        "IS_SNAPSHOTTING_ENABLED": "n",
    }
    app = CartApp(env=env)

    def add_item(cart_id: uuid.UUID, item_id: str) -> None:
        try:
            cart = cast(Cart, app.repository.get(cart_id))
        except AggregateNotFoundError:
            cart = Cart(id=cart_id)
        cart.add_item(item_id, QUANTITY)
        app.save(cart)

    def caller(carts: list[uuid.UUID], n: int) -> None:
        for k in range(n):
            add_item(carts[k % len(carts)], f"item-{k % ITEMS}")

    def in_threads(ns: list[int]) -> None:
        with ThreadPoolExecutor(max_workers=len(owned)) as pool:
            for future in [pool.submit(caller, c, n) for c, n in zip(owned, ns, strict=True)]:
                future.result()

    try:
        in_threads([len(carts) for carts in owned])  # warm-up
        start = time.perf_counter()
        in_threads(counts)
        seconds = time.perf_counter() - start
        with cast(Any, app.factory).datastore.get_connection(commit=False) as connection:
            pragmas = _pragmas(connection._sqlite_conn)
    finally:
        app.close()
    cold = CartApp(env={**env, "AGGREGATE_CACHE_MAXSIZE": ""})  # no cache: replays every cart
    carts = [cast(Cart, cold.repository.get(cart)) for c in owned for cart in c]
    cold.close()
    total = sum(sum(cart.items.values()) for cart in carts)
    expected = (len(carts) + sum(counts)) * QUANTITY
    rows = 2 * len(carts) + sum(counts)  # warm-up: Created + ItemAdded
    problems = _check(path, {"stored_events": rows}, total, expected)
    return Result(f"eventsourcing {version('eventsourcing')}", seconds, pragmas, problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000, help="timed commands per side")
    parser.add_argument("--callers", type=int, default=64, help="concurrent callers")
    parser.add_argument("--carts", type=int, default=1_000, help="carts, split over callers")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument(
        "--writer-thread",
        action="store_true",
        help="commit on the store's writer thread, not on the event loop (the service's default)",
    )
    args = parser.parse_args()
    if not 1 <= args.callers <= args.carts:
        parser.error("need 1 <= --callers <= --carts")
    sync = cast(Sync, args.synchronous)
    on_loop = not args.writer_thread
    carts = [uuid.uuid4() for _ in range(args.carts)]
    owned = [carts[c :: args.callers] for c in range(args.callers)]
    base, extra = divmod(args.commands, args.callers)
    counts = [base + (c < extra) for c in range(args.callers)]
    print(
        f"SQLite WAL synchronous={sync}; {args.commands} commands, {args.callers} callers, "
        f"{args.carts} carts (~{1 + args.commands / args.carts:.0f} events each); "
        f"eventsourcing: AGGREGATE_CACHE_MAXSIZE={CACHE_SIZE} (cache on), snapshotting off; "
        f"ours commits on its {'event loop' if on_loop else 'writer thread'}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-commands-") as folder:
        results = [
            asyncio.run(run_ours(Path(folder) / "ours.db", sync, owned, counts, on_loop=on_loop)),
            asyncio.run(
                run_ours(Path(folder) / "keys.db", sync, owned, counts, keys=True, on_loop=on_loop)
            ),
            run_eventsourcing(Path(folder) / "eventsourcing.db", sync, owned, counts),
        ]
    print(f"{'side':<24} {'commands':>9} {'seconds':>8} {'commands/s':>11}  sqlite")
    for r in results:
        rate = args.commands / r.seconds
        print(f"{r.side:<24} {args.commands:>9} {r.seconds:>8.2f} {rate:>11,.0f}  {r.pragmas}")
    print(f"ratio: {results[2].seconds / results[0].seconds:.2f}× (target ≥ 3×)")  # noqa: RUF001
    print(
        f"with Idempotency-Key: {results[0].seconds / results[1].seconds:.2f}× the rate "  # noqa: RUF001
        f"without (keys cost {results[1].seconds / results[0].seconds - 1:+.0%} time)"
    )
    failed = [f"{r.side}: {p}" for r in results for p in r.problems]
    wanted = f"journal_mode=wal synchronous={sync}"
    failed += [f"{r.side}: {r.pragmas}" for r in results if r.pragmas not in (wanted, UNVERIFIED)]
    for problem in failed:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
