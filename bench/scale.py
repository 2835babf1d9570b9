"""Scale-out on PostgreSQL: billing throughput with 1, 2 and 3 billing instances and cart
command throughput with 1, 2 and 3 cart instances, all in one run, with ratios against one.

Every instance is a real `msc billing-service` or `msc cart-service` process; the databases
are fresh schemas on the PostgreSQL server `--postgres` (trust auth; default the local one).

Billing, for k = 1, 2, 3 instances: a private nats-server (JetStream, file storage) and a fresh
billing schema; the k instances start, share the durable consumer `billing` and the schema,
and are waited for until each has a pull request waiting. The consumer is then paused
(JetStream consumer pause), `--events` ItemAdded events over `--carts` carts are published to
`CART` exactly as the relay publishes them (as bench/consume.py does), and once every instance
pulls again the consumer is resumed: all k start on the same preloaded stream. The rate is
events over the time from the first applied event to the last, both seen by polling billing's
database (sum of `bills.last_version`) every `--poll` s. Afterwards every bill must be at its
cart's last version with the quantities published.

Commands, for k = 1, 2, 3 instances: a fresh cart schema; the k instances share it, each with
its outbox relay publishing to one nats-server (`--no-relay`: without). A client in a process
of its own keeps `--connections` keep-alive connections, connection i to instance i mod k (as
an L4 balancer spreads connections), each adding items to carts of its own (`--carts-per-
connection`), closed loop: `--warmup` s not counted, then `--seconds` s counted. Afterwards
the store must hold one event per command answered 200.

Each run also prints how often the PostgreSQL server flushed its WAL (`pg_stat_wal`, the whole
server's, so other users count too): every durable commit waits for a flush, and one flush
can cover commits from several sessions.

Every measurement runs `--rounds` times, the instance counts interleaved (1, 2, 3, then
again), as other programs may load the machine meanwhile. Printed: for each, the best round's
count, seconds and rate, its ratio against one instance's best, the CPU the instances used
while measured (in cores) next to how busy the whole machine was (other programs included),
and every round's rate. On 2 cores expect little or no gain: the instances, PostgreSQL, the
broker and the client all share them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from _support import NatsServer, busy_between, machine_busy
from cart_events import check_bills
from consume import publish_events
from latency import RawClient, cpu_seconds
from microservice_connector.messaging.nats.connection import connect_nats, ensure_stream
from microservice_connector.runtime.system import free_port
from microservice_connector.settings import Settings

MSC = str(Path(sys.executable).with_name("msc"))
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
START_TIMEOUT_S = 60.0
DURABLE = "billing"  # billing's durable consumer
ITEMS = ("item-001", "item-002", "item-003", "item-004", "item-005")


@dataclass
class Run:
    """One measured run: `count` done in `seconds` by `instances` instances."""

    what: str
    instances: int
    count: int
    seconds: float
    cores: float  # CPU the instances used while measured, in cores
    machine: float  # fraction of the machine's CPU busy meanwhile (everything on it)
    problems: list[str]

    @property
    def rate(self) -> float:
        """Per second."""
        return self.count / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def fresh_schema(server: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema, dropped afterwards."""
    schema = f"bench_scale_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, poolclass=NullPool)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    parsed = make_url(server)
    url = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextlib.contextmanager
def instances(
    service: str, count: int, *, database_url: str, nats_url: str, folder: Path, args: list[str]
) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """`count` processes of `msc SERVICE` sharing `database_url`, started together; yields
    each one's base URL and process once all answer `/healthz`; SIGTERM at the end."""
    env = {**os.environ, "MSC_BROKER": "nats", "MSC_NATS_URL": nats_url}
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for n in range(1, count + 1):
            port = free_port()
            home = folder / f"{service}-{count}-{n}"
            home.mkdir(parents=True, exist_ok=True)
            command = [MSC, service, "--port", str(port), "--data-dir", str(home)]
            command += ["--database-url", database_url, *args]
            with (home / "service.log").open("wb") as log:
                process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**env, "MSC_INSTANCE_ID": f"{service}-{n}"},
                )
            started.append((f"http://127.0.0.1:{port}", process))
        for n, (url, process) in enumerate(started, 1):
            _wait_healthy(url, process, folder / f"{service}-{count}-{n}" / "service.log")
        yield started
    finally:
        for _, process in started:
            process.terminate()
        for _, process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{process.args} exited with {process.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {START_TIMEOUT_S:g} s")


class AppliedWatch(threading.Thread):
    """Polls billing's database until `events` versions are applied; keeps when the first
    and the last were seen."""

    def __init__(self, url: str, events: int, interval: float, timeout: float) -> None:
        super().__init__(name="applied-watch", daemon=True)
        self.url, self.events, self.interval, self.timeout = url, events, interval, timeout
        self.first: float | None = None
        self.last: float | None = None
        self.applied = 0

    def run(self) -> None:
        engine = create_engine(self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        deadline = time.monotonic() + self.timeout
        query = text("SELECT coalesce(sum(last_version), 0) FROM bills")
        try:
            with engine.connect() as connection:
                while time.monotonic() < deadline:
                    seen = time.perf_counter()
                    self.applied = int(connection.execute(query).scalar_one())
                    if self.applied and self.first is None:
                        self.first = seen
                    if self.applied >= self.events:
                        self.last = seen
                        return
                    time.sleep(self.interval)
        finally:
            engine.dispose()


def applied_by(url: str) -> int:
    """Events the billing instance at `url` applied since it started (its metrics)."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
    return int(
        sum(
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "msc_billing_events_total" and sample.labels["outcome"] == "applied"
        )
    )


async def all_pulling(js: JetStreamContext, k: int) -> None:
    """Return once the durable `billing` has pull requests waiting from `k` instances."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with contextlib.suppress(NotFoundError):  # not created yet
            if (await js.consumer_info("CART", DURABLE)).num_waiting >= k:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{k} billing instances did not all pull in time")
        await asyncio.sleep(0.05)


async def billing_run(k: int, args: argparse.Namespace, folder: Path) -> Run:
    """Billing throughput with `k` instances on a fresh stream and a fresh schema."""
    with (
        NatsServer(folder / f"nats-billing-{k}") as nats_server,
        fresh_schema(args.postgres) as billing_url,
        instances(
            "billing-service",
            k,
            database_url=billing_url,
            nats_url=nats_server.url,
            folder=folder,
            args=[],
        ) as running,
    ):
        client = await connect_nats([nats_server.url], name="bench-scale")
        try:
            js = client.jetstream()
            await ensure_stream(js, "CART", ["cart.events"])
            await all_pulling(js, k)
            # Paused, the consumer takes the instances' pull requests but delivers nothing.
            await js.pause_consumer("CART", DURABLE, "2999-01-01T00:00:00Z")
            published = time.perf_counter()
            quantities = await publish_events(js, args.events, args.carts)
            published = time.perf_counter() - published
            await all_pulling(js, k)
            watch = AppliedWatch(billing_url, args.events, args.poll, args.events / 50 + 60)
            watch.start()
            pids = [process.pid for _, process in running]
            cpu_before, busy_before = sum(map(cpu_seconds, pids)), machine_busy()
            flushes = wal_syncs(args.postgres)
            wall = time.perf_counter()
            await js.resume_consumer("CART", DURABLE)
            await asyncio.to_thread(watch.join)
            wall = time.perf_counter() - wall
            flushes = wal_syncs(args.postgres) - flushes
            cpu = sum(map(cpu_seconds, pids)) - cpu_before
            busy = busy_between(busy_before, machine_busy())
            shares = [applied_by(url) for url, _ in running]
        finally:
            await client.close()
        problems = []
        if watch.first is None or watch.last is None:
            problems.append(f"billing applied {watch.applied} of {args.events} in time")
            seconds = float("nan")
        else:
            seconds = watch.last - watch.first
        problems += check_bills(Settings(billing_database_url=billing_url), quantities)
    print(
        f"  billing x{k}: stream preloaded in {published:.2f} s; applied per instance {shares}; "
        f"PostgreSQL flushed its WAL {flushes / wall:,.0f} times/s"
    )
    return Run("billing events", k, args.events, seconds, cpu / wall, busy, problems)


@dataclass(frozen=True)
class ClientLoad:
    """What the client process sends: to which instances, over how many connections, when."""

    ports: list[int]
    pids: list[int]  # the instances', to read their CPU time
    connections: int
    carts_each: int
    warmup: float
    seconds: float
    tag: str  # keeps cart ids apart between runs
    postgres: str  # the server, to count its WAL flushes


@dataclass(frozen=True)
class Driven:
    """What the client saw: 200s answered in the counted window, every status, the CPU the
    instances and the client used in the window, and how busy the machine was."""

    counted: int
    statuses: Counter[int]
    instances_cpu: float
    client_cpu: float
    busy: float
    wal_syncs: int  # the whole PostgreSQL server's, in the window (other users included)


def commands_run(k: int, args: argparse.Namespace, nats_url: str, folder: Path) -> Run:
    """Command throughput with `k` cart instances sharing a fresh schema."""
    relay = [] if args.relay else ["--no-relay"]
    with (
        fresh_schema(args.postgres) as cart_url,
        instances(
            "cart-service", k, database_url=cart_url, nats_url=nats_url, folder=folder, args=relay
        ) as running,
    ):
        load = ClientLoad(
            ports=[int(url.rsplit(":", 1)[1]) for url, _ in running],
            pids=[process.pid for _, process in running],
            connections=args.connections,
            carts_each=args.carts_per_connection,
            warmup=args.warmup,
            seconds=args.seconds,
            tag=f"{folder.name}-k{k}",
            postgres=args.postgres,
        )
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            driven: Driven = pool.apply(drive_commands, (load,))
        engine = create_engine(cart_url, poolclass=NullPool)
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM events")).scalar_one()
        engine.dispose()
    statuses = driven.statuses
    flushes = driven.wal_syncs / args.seconds
    print(
        f"  cart x{k}: {driven.counted} commands counted; the client used "
        f"{driven.client_cpu / args.seconds:.2f} cores; PostgreSQL flushed its WAL "
        f"{flushes:,.0f} times/s ({driven.counted / max(driven.wal_syncs, 1):.1f} commands each)"
    )
    problems = []
    if set(statuses) != {200}:
        problems.append(f"cart x{k}: answers {dict(statuses)}")
    if stored != statuses[200]:
        problems.append(f"cart x{k}: {stored} events stored for {statuses[200]} commands")
    cores = driven.instances_cpu / args.seconds
    return Run("cart commands", k, driven.counted, args.seconds, cores, driven.busy, problems)


def drive_commands(load: ClientLoad) -> Driven:
    """In the client process: closed-loop add-item commands, each connection on carts of its
    own, until the counted window ends."""
    return asyncio.run(_drive(load))


async def _drive(load: ClientLoad) -> Driven:
    statuses: Counter[int] = Counter()
    counted = 0
    start = time.perf_counter()
    window = (start + load.warmup, start + load.warmup + load.seconds)
    marks: dict[str, tuple[float, float, tuple[float, float], int]] = {}

    async def connection(i: int) -> None:
        nonlocal counted
        client = RawClient("127.0.0.1", load.ports[i % len(load.ports)])
        carts = [f"{load.tag}-{i}-{j}-{uuid.uuid4().hex[:6]}" for j in range(load.carts_each)]
        n = 0
        try:
            while time.perf_counter() < window[1]:
                body = f'{{"item_id": "{ITEMS[n % len(ITEMS)]}", "quantity": 1}}'.encode()
                status, _ = await client.post(f"/carts/{carts[n % len(carts)]}/items", body)
                answered = time.perf_counter()
                statuses[status] += 1
                counted += status == 200 and window[0] <= answered < window[1]
                n += 1
        finally:
            await client.close()

    async def mark(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        cpu = sum(map(cpu_seconds, load.pids)), time.process_time()
        marks[name] = (*cpu, machine_busy(), wal_syncs(load.postgres))

    await asyncio.gather(
        mark("start", window[0]),
        mark("end", window[1]),
        *(connection(i) for i in range(load.connections)),
    )
    (cpu0, own0, busy0, wal0), (cpu1, own1, busy1, wal1) = marks["start"], marks["end"]
    busy = busy_between(busy0, busy1)
    return Driven(counted, statuses, cpu1 - cpu0, own1 - own0, busy, wal1 - wal0)


def wal_syncs(server: str) -> int:
    """How often the PostgreSQL server has flushed its WAL to disk so far (`pg_stat_wal`):
    every durable commit waits for one, though one flush may cover several commits."""
    engine = create_engine(server, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT wal_sync FROM pg_stat_wal")).scalar_one())
    finally:
        engine.dispose()


def table(runs: list[Run]) -> list[str]:
    """The best round of each (what, instances) as a Markdown table, with its rate as a ratio
    against one instance's best, and every round's rate."""
    lines = [
        "| what | instances | count | seconds | per second | vs 1 instance "
        "| instances' CPU (cores) | machine busy | every round, per second |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    best: dict[tuple[str, int], Run] = {}
    for run in runs:
        key = (run.what, run.instances)
        if key not in best or run.rate > best[key].rate:
            best[key] = run
    for (what, k), run in best.items():
        one = best[(what, 1)]
        ratio = run.rate / one.rate if one.rate else float("nan")
        rounds = ", ".join(f"{r.rate:,.0f}" for r in runs if (r.what, r.instances) == (what, k))
        lines.append(
            f"| {what} | {k} | {run.count} | {run.seconds:.2f} | {run.rate:,.0f} "
            f"| {ratio:.2f}x | {run.cores:.2f} | {run.machine:.0%} | {rounds} |"
        )
    return lines


async def billing_runs(args: argparse.Namespace, folder: Path, tag: str) -> list[Run]:
    """Billing with 1, 2, ... `--max-instances` instances."""
    return [await billing_run(k, args, folder / tag) for k in range(1, args.max_instances + 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL server URL")
    parser.add_argument("--max-instances", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    parser.add_argument("--events", type=int, default=30_000, help="events billing consumes")
    parser.add_argument("--carts", type=int, default=1_000, help="carts those events spread over")
    parser.add_argument("--poll", type=float, default=0.01, help="billing database poll, s")
    parser.add_argument("--connections", type=int, default=32, help="client connections")
    parser.add_argument("--carts-per-connection", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds not counted")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds counted")
    parser.add_argument("--relay", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; PostgreSQL {make_url(args.postgres).render_as_string()}")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        folder = Path(scratch)
        with NatsServer(folder / "nats-commands") as nats_server:
            for r in range(1, args.rounds + 1):
                print(f"round {r} of {args.rounds}")
                runs += asyncio.run(billing_runs(args, folder, f"round-{r}"))
                for k in range(1, args.max_instances + 1):
                    runs.append(commands_run(k, args, nats_server.url, folder / f"round-{r}"))
    print("\n".join(table(runs)))
    problems = [problem for run in runs for problem in run.problems]
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
