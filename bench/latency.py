"""End-to-end latency, HTTP add-item command → applied by billing, at a steady rate (DESIGN §5).

The whole system runs as processes, as `msc up` runs it: `runtime.system.System` starts an
embedded nats-server, `msc cart-service` (with its outbox relay) and `msc billing-service` on
free loopback ports, over a temporary data folder (SQLite, `synchronous=FULL` by default).

Load: `POST /carts/{id}/items` at `--rate` commands/s on an open-loop schedule (command k is
sent at t0 + k/rate whether or not earlier ones were answered), round-robin over `--carts`
carts, for `--warmup` s (not measured; with the defaults it creates every cart) and then
`--seconds` s measured. The client is a minimal HTTP/1.1 keep-alive client on asyncio streams
(`--client raw`, the default: it shares the 2 cores with the system, so it should cost little)
or `httpx.AsyncClient` (`--client httpx`).

"Applied" is detected from billing's own database: a thread in this process polls
`billing.db` (sqlite3, read-only, WAL, so it never blocks billing's writer) every
`--poll-interval` s while some cart has a command in flight or a version billing has not
reached yet. Each poll reads `PRAGMA data_version` (it changes when billing commits), and only
when it changed runs `SELECT cart_id, last_version FROM bills WHERE cart_id IN (...)` for those
carts; this keeps the poller's CPU small, as it shares the cores with the system. A command
whose response said cart version v counts as applied at the start of the first read that saw
`last_version >= v`, so its end-to-end latency is that minus the moment its request was
written; it is late by at most one poll period, whose p50/p99 the output prints as the
resolution.

So that an overloaded system cannot keep the run going for minutes, commands not answered
within `--answer-timeout` s (default 10) of the last send are given up; they, and answered
commands billing never applied, count as infinitely late in the percentiles, and as failures.

Output: p50/p90/p99/max of the HTTP response time and of send → billing applied, the achieved
send rate and how far sends lagged the schedule, each process's CPU use while measured, against
the targets p50 ≤ 5 ms, p99 ≤ 25 ms. `--stages` adds where the time went, from the timestamps
the services store (event decided, outbox row built and marked published, bill written), and
from a plain NATS subscription to `cart.events` in this process (when the relay's publish
reached the broker; NATS only). At the end billing must hold, over all carts, as many applied
versions as commands were sent, and no command may have failed; the script exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
import nats

from _support import cpu_seconds, load_average, percentile
from microservice_connector.runtime.system import System, free_port

ITEMS = ("item-001", "item-002", "item-003", "item-004", "item-005")
TARGET_P50_MS, TARGET_P99_MS = 5.0, 25.0
STAGES = (
    "sent → cart decided",
    "decided → outbox row built",
    "row built → HTTP answered",
    "row built → relay published",
    "row built → relay marked",
    "row built → billing wrote*",
    "billing wrote → poll saw*",
)
DRAIN_TIMEOUT_S = 10.0  # after the last answer, for billing to catch up
INF = float("inf")
MAX_IDLE_S = 2.0  # uvicorn closes a keep-alive connection idle for 5 s


class Client(Protocol):
    """POSTs JSON and returns the status and the decoded body."""

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class RawClient:
    """HTTP/1.1 with keep-alive over asyncio streams: an idle connection is reused, a new one
    is opened when all are busy (so an open-loop sender never queues behind a slow answer)."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def open(self, count: int) -> None:
        """Open `count` connections ahead of time."""
        for _ in range(count):
            self._idle.append((*await self._connect(), time.monotonic()))

    async def _acquire(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer, since = self._idle.pop()
            if time.monotonic() - since < MAX_IDLE_S:
                return reader, writer
            writer.close()  # the server may be closing it as we speak
        return await self._connect()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        self._all.append(writer)
        return reader, writer

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._acquire()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        answer = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() != "close":
            self._idle.append((reader, writer, time.monotonic()))
        return status, answer

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class HttpxClient:
    """`httpx.AsyncClient` with a pool large enough never to queue a request."""

    def __init__(self, base_url: str) -> None:
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
        self._client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        response = await self._client.post(path, content=body, headers=headers)
        return response.status_code, response.content

    async def close(self) -> None:
        await self._client.aclose()


class BillingWatcher(threading.Thread):
    """Polls billing.db for the carts something is awaited of; keeps, per cart, when each new
    `last_version` was first seen (the start time of that poll)."""

    def __init__(self, db_path: Path, interval: float) -> None:
        super().__init__(name="billing-watcher", daemon=True)
        self._db_path = db_path
        self._interval = interval
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._in_flight: Counter[str] = Counter()
        self._awaited: dict[str, int] = {}
        self._watch: set[str] = set()
        self._answers = 0  # responses since the watch set was last pruned
        self._idle = threading.Event()
        self.last: dict[str, int] = {}
        self.seen: dict[str, list[tuple[int, float]]] = {}
        self.poll_starts: list[float] = []

    def sent(self, cart: str) -> None:
        """A command on `cart` is about to be sent."""
        with self._lock:
            self._in_flight[cart] += 1
            self._watch.add(cart)
            self._idle.clear()

    def answered(self, cart: str, version: int | None) -> None:
        """The command's response came: billing must reach `version` (None: it failed)."""
        with self._lock:
            self._in_flight[cart] -= 1
            self._answers += 1
            if version is not None:
                self._awaited[cart] = max(version, self._awaited.get(cart, 0))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is awaited (call once nothing more is sent); False on timeout."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        """Stop polling."""
        self._stop_event.set()
        self.join()

    def run(self) -> None:
        db = read_only(self._db_path)
        seen_data_version = None
        try:
            while not self._stop_event.is_set():
                with self._lock:
                    carts = list(self._watch)
                if carts:
                    self.poll_starts.append(time.perf_counter())
                    # Changes whenever another connection commits: the table is read only then.
                    data_version = db.execute("PRAGMA data_version").fetchone()[0]
                    if data_version != seen_data_version:
                        seen_data_version = data_version
                        self._read(db, carts)
                        self._unwatch(carts)
                    elif self._answers:
                        self._unwatch(carts)
                time.sleep(self._interval)
        finally:
            db.close()

    def _read(self, db: sqlite3.Connection, carts: list[str]) -> None:
        start = time.perf_counter()  # the read's snapshot: what it sees was committed by now
        marks = ",".join("?" * len(carts))
        rows = db.execute(
            f"SELECT cart_id, last_version FROM bills WHERE cart_id IN ({marks})", carts
        ).fetchall()
        for cart, version in rows:
            if version > self.last.get(cart, 0):
                self.last[cart] = version
                self.seen.setdefault(cart, []).append((version, start))

    def _unwatch(self, carts: list[str]) -> None:
        with self._lock:
            self._answers = 0
            for cart in carts:
                if self._in_flight[cart] == 0 and self.last.get(cart, 0) >= self._awaited.get(
                    cart, 0
                ):
                    self._watch.discard(cart)
            if not self._watch:
                self._idle.set()

    def applied_at(self, cart: str, version: int) -> float | None:
        """When billing was first seen at `version` or later for `cart`."""
        for seen_version, moment in self.seen.get(cart, []):
            if seen_version >= version:
                return moment
        return None


@dataclass
class Command:
    """One command's timeline (perf_counter seconds) and result."""

    k: int
    cart: str
    measured: bool
    scheduled: float
    sent: float = 0.0
    answered: float = 0.0
    status: int = 0
    version: int | None = None
    error: str = ""
    wall_offset: float = 0.0  # time.time() - time.perf_counter() when sent

    @property
    def sent_wall(self) -> float:
        """`sent` on the wall clock."""
        return self.sent + self.wall_offset

    @property
    def answered_wall(self) -> float:
        """`answered` on the wall clock."""
        return self.answered + self.wall_offset


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """Each process's CPU seconds, and the moment, under "" ."""
    return {"": time.perf_counter()} | {name: cpu_seconds(pid) for name, pid in pids.items()}


async def drive(
    client: Client,
    watcher: BillingWatcher,
    carts: list[str],
    args: argparse.Namespace,
    pids: dict[str, int],
) -> tuple[list[Command], dict[str, float]]:
    """Send every command on schedule; returns them all once all are answered, and each
    process's CPU use (in cores) while the measured commands were being sent."""
    total = round(args.rate * (args.warmup + args.seconds))
    warmup = round(args.rate * args.warmup)
    t0 = time.perf_counter() + 0.05
    commands: list[Command] = []
    tasks: set[asyncio.Task[None]] = set()

    async def send(command: Command) -> None:
        body = json.dumps({"item_id": ITEMS[command.k % len(ITEMS)], "quantity": 1}).encode()
        watcher.sent(command.cart)
        command.sent = time.perf_counter()
        command.wall_offset = time.time() - command.sent
        try:
            command.status, answer = await client.post(f"/carts/{command.cart}/items", body)
            command.answered = time.perf_counter()
            if command.status == 200:
                command.version = int(json.loads(answer)["version"])
        except Exception as exc:
            command.error = repr(exc)
        finally:
            watcher.answered(command.cart, command.version)

    before = cpu_snapshot(pids)
    for k in range(total):
        if k == warmup:
            before = cpu_snapshot(pids)
        scheduled = t0 + k / args.rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        command = Command(k, carts[k % len(carts)], k >= warmup, scheduled)
        commands.append(command)
        task = asyncio.create_task(send(command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    after = cpu_snapshot(pids)
    elapsed = after[""] - before[""]
    usage = {name: (after[name] - before[name]) / elapsed for name in pids}
    if tasks:  # an overloaded service could keep us waiting for minutes: give up on those
        _, late = await asyncio.wait(tasks, timeout=args.answer_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    for command in commands:
        if command.status == 0 and not command.error:
            command.error = f"no answer within {args.answer_timeout:g} s of the last send"
    return commands, usage


def ms(values: list[float]) -> list[float]:
    """Seconds to sorted milliseconds."""
    return sorted(v * 1000 for v in values)


def row(label: str, values_ms: list[float]) -> str:
    """A latency table row."""
    if not values_ms:
        return f"{label:<28} {0:>6} " + " ".join(f"{'-':>8}" for _ in range(4))
    cells = [percentile(values_ms, p) for p in (0.50, 0.90, 0.99)] + [max(values_ms)]
    return f"{label:<28} {len(values_ms):>6} " + " ".join(f"{c:>8.2f}" for c in cells)


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to a SQLite file (in WAL mode it never blocks the writer)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def _moment(text: str) -> float:
    """A naive UTC timestamp as SQLAlchemy stores it in SQLite, as POSIX seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class WireWatcher:
    """A plain NATS subscription to `cart.events`: when each event (by `event-id`) reached
    the broker, as the relay published it (wall clock)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._client: nats.aio.client.Client | None = None

    async def start(self, url: str) -> None:
        """Subscribe on the broker at `url`."""
        self._client = await nats.connect(url)

        async def on_message(message: nats.aio.msg.Msg) -> None:
            event_id = (message.headers or {}).get("event-id")
            if event_id is not None:
                self.seen.setdefault(event_id, time.time())

        await self._client.subscribe("cart.events", cb=on_message)

    async def close(self) -> None:
        """Unsubscribe and disconnect."""
        if self._client is not None:
            await self._client.close()


def stages(
    folder: Path, commands: list[Command], watcher: BillingWatcher, wire: WireWatcher
) -> list[str]:
    """Where the time went, from the timestamps the services store (wall clock, µs): each
    measured command's event (decided), outbox row (built in the commit, marked after the
    broker's ack) and, for the last command of each cart, billing's `bills.updated_at`
    (written in the applying transaction, just before its commit); and when the broker
    passed the event on to a subscriber (`WireWatcher`)."""
    with contextlib.closing(read_only(folder / "events.db")) as db:
        cart_rows = db.execute(
            "SELECT e.aggregate_id, e.version, e.timestamp, o.created_at, o.published_at,"
            " e.event_id FROM events e JOIN outbox o ON o.event_id = e.event_id"
        ).fetchall()
    with contextlib.closing(read_only(folder / "billing.db")) as db:
        bill_rows = db.execute("SELECT cart_id, last_version, updated_at FROM bills").fetchall()
    cart_side = {(cart, version): row for cart, version, *row in cart_rows}
    billed = {(cart, version): _moment(updated) for cart, version, updated in bill_rows}
    spans: dict[str, list[float]] = {name: [] for name in STAGES}
    for c in commands:
        found = cart_side.get((c.cart, c.version or 0))
        if not c.measured or found is None or found[2] is None:
            continue
        decided, built, marked = (_moment(text) for text in found[:3])
        spans[STAGES[0]].append(decided - c.sent_wall)
        spans[STAGES[1]].append(built - decided)
        spans[STAGES[2]].append(c.answered_wall - built)
        published = wire.seen.get(found[3])
        if published is not None:
            spans[STAGES[3]].append(published - built)
        spans[STAGES[4]].append(marked - built)
        bill = billed.get((c.cart, c.version or 0))
        seen = watcher.applied_at(c.cart, c.version or 0)
        if bill is not None and seen is not None:
            spans[STAGES[5]].append(bill - built)
            spans[STAGES[6]].append(seen + c.wall_offset - bill)
    return [row(name, ms(values)) for name, values in spans.items() if values]


@dataclass
class Verdict:
    """One run's end-to-end p50 and p99 (ms), the load average after it, and its problems."""

    p50: float = INF
    p99: float = INF
    load: str = ""
    problems: int = 0


async def run(args: argparse.Namespace, folder: Path) -> Verdict:
    carts = [f"lat-{uuid.uuid4().hex[:12]}" for _ in range(args.carts)]
    problems: list[str] = []
    verdict = Verdict()
    system = System(folder, cart_port=free_port(), billing_port=free_port())
    started = time.perf_counter()
    with system:
        print(
            f"system up in {time.perf_counter() - started:.1f} s: nats-server, cart-service, "
            f"billing-service as processes; data in {folder}"
        )
        watcher = BillingWatcher(folder / "billing.db", args.poll_interval)
        watcher.start()
        wire = WireWatcher()
        if args.stages and system.nats_url is not None:
            await wire.start(system.nats_url)
        client: Client
        if args.client == "raw":
            raw = RawClient("127.0.0.1", system.cart_port)
            await raw.open(16)
            client = raw
        else:
            client = HttpxClient(f"http://127.0.0.1:{system.cart_port}")
        try:
            pids = {part.name: part.process.pid for part in system.parts}
            pids["bench client"] = os.getpid()
            commands, usage = await drive(client, watcher, carts, args, pids)
            await asyncio.to_thread(watcher.wait_idle, DRAIN_TIMEOUT_S)
        finally:
            await client.close()
            await wire.close()
            watcher.stop()
        with contextlib.closing(read_only(folder / "billing.db")) as db:
            applied_versions = db.execute("SELECT coalesce(sum(last_version), 0) FROM bills")
            applied_total = applied_versions.fetchone()[0]
        failed_part = system.failed_part()
        if failed_part is not None:
            problems.append(f"{failed_part.name} exited:\n{failed_part.tail()}")

    measured = [c for c in commands if c.measured]
    failed = [c for c in commands if c.status != 200]
    if failed:
        statuses = Counter(c.error or c.status for c in failed)
        problems.append(f"{len(failed)} commands failed: {dict(statuses)}")
    answered_ok = sum(1 for c in commands if c.status == 200)
    if not failed and applied_total != len(commands):
        problems.append(f"billing applied {applied_total} versions, {len(commands)} commands sent")
    elif applied_total < answered_ok:
        problems.append(f"billing applied {applied_total} versions, {answered_ok} answered")
    # A command never answered, or never seen applied, counts as infinitely late.
    http = [c.answered - c.sent if c.status == 200 else INF for c in measured]
    e2e: list[float] = []
    for c in measured:
        applied = None if c.version is None else watcher.applied_at(c.cart, c.version)
        e2e.append(INF if applied is None else applied - c.sent)
    missing = sum(1 for c in measured if c.status == 200) - sum(1 for v in e2e if v != INF)
    if missing:
        problems.append(f"{missing} answered commands never seen applied by billing")
    lag = ms([c.sent - c.scheduled for c in measured])
    span = measured[-1].sent - measured[0].sent if len(measured) > 1 else float("nan")
    gaps = ms([b - a for a, b in zip(watcher.poll_starts, watcher.poll_starts[1:], strict=False)])
    gaps = [g for g in gaps if g < 50]  # pauses while nothing was awaited are not resolution

    print(
        f"load: {args.rate:g} commands/s open loop over {args.carts} carts, warm-up "
        f"{args.warmup:g} s then {args.seconds:g} s measured; client: {args.client}"
    )
    print(
        f"sent: {len(measured)} measured commands in {span:.2f} s = "
        f"{(len(measured) - 1) / span:.1f} commands/s; lag behind schedule p50 "
        f"{percentile(lag, 0.5):.2f} ms, p99 {percentile(lag, 0.99):.2f} ms, max {max(lag):.2f} ms"
    )
    answered = sorted(c.answered for c in measured if c.status == 200)
    if len(answered) > 1:
        print(
            f"answered: {len(answered)} measured commands, the last "
            f"{answered[-1] - measured[-1].sent:.2f} s after the last send (the cart service "
            f"answered {(len(answered) - 1) / (answered[-1] - answered[0]):.1f} commands/s)"
        )
    print(
        "applied = first read of billing.db (read-only sqlite3, WAL; read when PRAGMA "
        "data_version changed) seeing bills.last_version >= the command's cart version; "
        f"poll period (resolution) p50 "
        f"{percentile(gaps, 0.5):.2f} ms, p99 {percentile(gaps, 0.99):.2f} ms"
    )
    cores = ", ".join(f"{name} {cores:.2f}" for name, cores in usage.items())
    print(f"CPU while measured, in cores (of {os.cpu_count()}): {cores}")
    print(f"{'ms':<28} {'n':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    if http:
        print(row("HTTP response (cart only)", ms(http)))
    if e2e:
        e2e_ms = ms(e2e)
        print(row("send → billing applied", e2e_ms))
        if INF in e2e_ms:  # percentiles of what did finish, for context
            print(row("  HTTP, answered only", ms([v for v in http if v != INF])))
            print(row("  applied, seen only", ms([v for v in e2e if v != INF])))
        p50, p99 = percentile(e2e_ms, 0.5), percentile(e2e_ms, 0.99)
        verdict.p50, verdict.p99 = p50, p99
        print(
            f"targets: p50 {p50:.2f} ms (≤ {TARGET_P50_MS:g}: "
            f"{'met' if p50 <= TARGET_P50_MS else 'MISSED'}), p99 {p99:.2f} ms "
            f"(≤ {TARGET_P99_MS:g}: {'met' if p99 <= TARGET_P99_MS else 'MISSED'}); "
            f"ratio to target: p50 {p50 / TARGET_P50_MS:.2f}, p99 {p99 / TARGET_P99_MS:.2f}"
        )
    if args.stages and e2e:
        print("where the time went (from the services' stored timestamps; * = last command of")
        print("each cart only, billing's timestamp is taken just before its commit):")
        for line in stages(folder, commands, watcher, wire):
            print(line)
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    verdict.problems = len(problems)
    verdict.load = load_average()
    print(verdict.load, "(after the run; the machine is shared: read the figures with it)")
    return verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="commands per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--carts", type=int, default=1_000, help="carts, used round-robin")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument(
        "--poll-interval", type=float, default=0.0005, help="sleep between billing.db polls"
    )
    parser.add_argument(
        "--stages", action="store_true", help="also break the latency down by stage"
    )
    parser.add_argument(
        "--answer-timeout",
        type=float,
        default=10.0,
        help="after the last send, wait this long for answers; later ones count as infinite",
    )
    parser.add_argument("--keep", type=Path, help="use (and keep) this data folder, for logs")
    parser.add_argument("--runs", type=int, default=1, help="runs in a row, each on a new system")
    args = parser.parse_args()
    verdicts = []
    for number in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"--- run {number} of {args.runs}")
        if args.keep is not None:
            verdicts.append(asyncio.run(run(args, args.keep / f"run-{number}")))
            continue
        with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
            verdicts.append(asyncio.run(run(args, Path(folder))))
    if args.runs > 1:
        print(f"--- {args.runs} runs at {args.rate:g} commands/s, send → billing applied:")
        for number, verdict in enumerate(verdicts, start=1):
            print(
                f"run {number}: p50 {verdict.p50:.2f} ms, p99 {verdict.p99:.2f} ms; {verdict.load}"
            )
        held = all(
            v.p50 <= TARGET_P50_MS and v.p99 <= TARGET_P99_MS and not v.problems for v in verdicts
        )
        print(f"targets held in every run: {'yes' if held else 'NO'}")
    return 1 if any(v.problems for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
