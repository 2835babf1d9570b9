"""The reliability harness: the system as killable processes, steady HTTP load that records
every answer, an audit of what the store and billing hold, and the summary tables.

`System` runs a `nats-server`, the cart service (with its relay) and billing, each a real
process on a fixed loopback port, so either service can be SIGKILLed and started again where
it was. `Load` sends commands from several threads, each with its own `X-Correlation-ID`, and
keeps the ids of those answered 200. `audit()` reads the global feed and every bill and counts
what was lost (a 200 whose events are not stored) and what was applied twice (a bill that is
not the cart's, or billing applying more events than are stored).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from support.figures import HEADER, REPORTED
from support.nats import NatsServer
from support.nats_cluster import NatsCluster
from support.processes import MSC, free_port, wait_for
from support.system import ITEMS, KAFKA_SESSION_TIMEOUT_MS, expected_bill
from support.tansu import TansuServer, tansu_or_skip

START_TIMEOUT_S = 60.0
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.md"


@dataclass
class Figures:
    """One suite's summary row."""

    suite: str
    rounds: int
    commands: int
    events: int
    lost: int | None  # None: the suite has nothing that could be lost (shown as "n/a")
    applied_twice: int | None
    server_errors: int
    recover_s: float

    def row(self) -> str:
        """The row of the summary table."""
        lost, twice = (_cell(n) for n in (self.lost, self.applied_twice))
        return (
            f"| {self.suite} | {self.rounds} | {self.commands} | {self.events} | {lost} "
            f"| {twice} | {self.server_errors} | {self.recover_s:.1f} |"
        )


def _cell(count: int | None) -> str:
    return "n/a" if count is None else str(count)


def report(figures: Figures) -> None:
    """Keep the row for the end-of-session table, print it, and append it to the results."""
    REPORTED.append((figures.suite, figures.row()))
    print(f"\n{HEADER}\n{figures.row()}")
    try:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with RESULTS.open("a") as out:
            out.write(f"{figures.row()} <!-- {stamp} -->\n")
    except OSError:
        pass  # the printed table is what matters


class Service:
    """One `msc <service>` process on a fixed port: start, SIGKILL, SIGTERM, start again."""

    def __init__(self, name: str, args: list[str], port: int, log: Path, env: dict[str, str]):
        self.name, self.port, self.log, self.env = name, port, log, env
        self.args = [name, "--port", str(port), *args]
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until `/healthz` answers; returns the seconds that took."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [MSC, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its PostgreSQL sessions are named after it (libpq reads PGAPPNAME).
                env={**os.environ, "PGAPPNAME": f"{self.name}:{self.port}", **self.env},
            )
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, START_TIMEOUT_S, f"{self.name} on {self.url}")
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: no chance to answer, flush, mark or ack."""
        self._end(signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: it holds its connections and state but does nothing until `thaw`."""
        assert self.process is not None, f"{self.name} is not running"
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: a frozen process goes on where it stopped."""
        assert self.process is not None, f"{self.name} is not running"
        self.process.send_signal(signal.SIGCONT)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the exit; returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def _end(self, sig: signal.Signals, timeout: float = 30) -> int:
        process, self.process = self.process, None
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.wait()
            raise AssertionError(
                f"{self.name} did not exit {timeout:g} s after {sig.name}"
            ) from exc


@dataclass
class System:
    """The broker, the cart service (with relay) and billing, as restartable processes. The
    broker is `nats`, or on Kafka `tansu` (and `nats` is None)."""

    data_dir: Path
    nats: NatsServer | None
    cart: Service
    billing: Service
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    tansu: TansuServer | None = None

    def stop_broker(self) -> None:
        """Take the broker away: nats-server stops; Tansu's connections are cut (Tansu keeps
        its data only in memory, so it runs on behind its proxy, as after a partition)."""
        if self.tansu is not None:
            assert self.tansu.proxy is not None
            self.tansu.proxy.cut()
        else:
            assert self.nats is not None
            self.nats.stop()

    def start_broker(self) -> None:
        """Bring the broker back, with what it held."""
        if self.tansu is not None:
            assert self.tansu.proxy is not None
            self.tansu.proxy.restore()
        else:
            assert self.nats is not None
            self.nats.start()

    def bill(self, cart_id: str) -> dict[str, Any] | None:
        """Billing's bill of the cart, or None before its first event."""
        response = self.http.get(f"{self.billing.url}/billing/carts/{cart_id}")
        return response.json() if response.status_code == 200 else None

    def metric(self, url: str, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels`."""
        text = self.http.get(f"{url}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def applied(self) -> float:
        """Events billing applied since its process started, from the broker or (healing
        what the broker lost) from the cart store."""
        return self.metric(
            self.billing.url, "msc_billing_events_total", outcome="applied"
        ) + self.metric(self.billing.url, "msc_billing_healed_events_total")

    def pending_outbox(self) -> float:
        """Outbox rows the relay has not had acknowledged yet."""
        return self.metric(self.cart.url, "msc_outbox_pending_rows")

    def feed(self) -> list[dict[str, Any]]:
        """Every stored event, by position, from the cart service's global feed."""
        events: list[dict[str, Any]] = []
        after = 0
        for _ in range(100_000):
            page = self.http.get(f"{self.cart.url}/events", params={"after": after, "limit": 1000})
            assert page.status_code == 200, page.text
            body = page.json()
            if not body["events"]:
                return events
            events += body["events"]
            after = body["next_after"]
        raise AssertionError("the feed did not end")

    def wait_until_billed(self, versions: dict[str, int], timeout: float) -> float:
        """Poll until every bill has its cart's version; returns the seconds it took."""
        started = time.monotonic()
        behind = dict(versions)

        def caught_up() -> bool:
            for cart_id, version in list(behind.items()):
                if (self.bill(cart_id) or {}).get("last_version") == version:
                    del behind[cart_id]
                else:
                    return False
            return True

        wait_for(caught_up, timeout, f"billing to catch up ({len(behind)} carts behind)")
        return time.monotonic() - started


@contextmanager
def running_system(
    data_dir: Path,
    *,
    nats_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    cluster: NatsCluster | None = None,
    broker_kind: Literal["nats", "kafka"] = "nats",
) -> Iterator[System]:
    """A `System` on free loopback ports, its data under `data_dir`; stopped at the end.
    `nats_args` go to `nats-server`, `env` to both services. With a running `cluster`, the
    services get every node's URL and streams of as many replicas, and `System.nats` is its
    first node (the cluster is the caller's to stop). With `broker_kind="kafka"` the broker
    is Tansu behind a `TcpProxy` (skips where there is no Tansu build)."""
    tansu: TansuServer | None = None
    nats: NatsServer | None = None
    if broker_kind == "kafka":
        tansu_or_skip()
        tansu = TansuServer(data_dir / "tansu", behind_proxy=True).start()
        broker = {
            "MSC_BROKER": "kafka",
            "MSC_KAFKA_BOOTSTRAP": tansu.bootstrap,
            "MSC_KAFKA_SESSION_TIMEOUT_MS": KAFKA_SESSION_TIMEOUT_MS,
            "MSC_KAFKA_PARTITIONS": "3",
        }
    elif cluster is None:
        nats = NatsServer(data_dir / "nats", args=nats_args).start()
        broker = {"MSC_NATS_URL": nats.url}
    else:
        nats = cluster.nodes[0]
        broker = {
            "MSC_NATS_URL": ",".join(cluster.urls),
            "MSC_NATS_REPLICAS": str(len(cluster.nodes)),
        }
    cart_port = free_port()
    env = {
        "MSC_BROKER": "nats",
        "MSC_CART_URL": f"http://127.0.0.1:{cart_port}",  # billing heals from its store
        **broker,
        **(env or {}),
    }
    common = ["--data-dir", str(data_dir)]
    cart = Service("cart-service", common, cart_port, data_dir / "cart.log", env)
    billing = Service("billing-service", common, free_port(), data_dir / "billing.log", env)
    system = System(data_dir, nats, cart, billing, tansu=tansu)
    try:
        cart.start()
        billing.start()
        yield system
    finally:
        for service in (cart, billing):
            with suppress(AssertionError):
                service.terminate(timeout=30)
        system.http.close()
        if tansu is not None:
            tansu.close()
        if nats is not None and cluster is None:
            nats.close()


@dataclass
class Answer:
    """A command's answer: its status (0 when none came) and, on 200, the cart's version."""

    correlation_id: str
    cart_id: str
    status: int
    version: int | None = None
    refused: bool = False  # no connection at all: the request never reached the service


class Load:
    """`clients` threads sending commands over `carts` until stopped; keeps every answer.
    Given several cart service URLs, each thread takes them in turn, request by request. A
    cart checked out is replaced by a fresh one (`<id>:<n>`), so a long run never runs out
    of carts that accept commands."""

    def __init__(
        self, url: str | Sequence[str], carts: list[str], *, clients: int = 4, seed: int = 0
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url, self.carts, self.clients, self.seed = self.urls[0], carts, clients, seed
        self.answers: list[Answer] = []
        self._open_carts = list(carts)
        self._replaced = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(self.seed * 1000 + n,))
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending and wait for the last answers."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a load client hung"

    def count(self, status: int) -> int:
        """Answers with this status so far (0: no answer)."""
        with self._lock:
            return sum(answer.status == status for answer in self.answers)

    def wait_for_answers(self, status: int, more: int, timeout: float = 60) -> None:
        """Poll until `more` further answers with `status` came."""
        target = self.count(status) + more
        wait_for(lambda: self.count(status) >= target, timeout, f"{more} more {status}s")

    def server_errors(self) -> int:
        """Answers 500 and above."""
        with self._lock:
            return sum(answer.status >= 500 for answer in self.answers)

    def statuses(self) -> Counter[int]:
        """How many answers of each status."""
        with self._lock:
            return Counter(answer.status for answer in self.answers)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        first = seed % len(self.urls)  # threads start on different instances
        urls = itertools.cycle(self.urls[first:] + self.urls[:first])
        with httpx.Client(timeout=30) as http:
            while not self._stop.is_set():
                url = next(urls)
                with self._lock:
                    cart_id = rng.choice(self._open_carts)
                item = rng.choice(ITEMS)
                correlation = str(uuid.uuid4())
                headers = {"X-Correlation-ID": correlation}
                roll = rng.random()
                try:
                    if roll < 0.8:
                        body = {"item_id": item, "quantity": rng.randint(1, 5)}
                        response = http.post(
                            f"{url}/carts/{cart_id}/items", json=body, headers=headers
                        )
                    elif roll < 0.99:
                        response = http.delete(
                            f"{url}/carts/{cart_id}/items/{item}",
                            params={"quantity": 1},
                            headers=headers,
                        )
                    else:
                        response = http.post(f"{url}/carts/{cart_id}/checkout", headers=headers)
                except httpx.HTTPError as exc:
                    answer = Answer(correlation, cart_id, 0, refused=_refused(exc))
                    self._stop.wait(0.05)  # the service is down: do not spin
                else:
                    version = response.json()["version"] if response.status_code == 200 else None
                    answer = Answer(correlation, cart_id, response.status_code, version)
                    if response.status_code == 200 and roll >= 0.99:
                        self._replace(cart_id)
                with self._lock:
                    self.answers.append(answer)

    def _replace(self, cart_id: str) -> None:
        with self._lock:
            if cart_id in self._open_carts:
                self._replaced += 1
                base = cart_id.split(":", 1)[0]
                self._open_carts[self._open_carts.index(cart_id)] = f"{base}:{self._replaced}"


def _refused(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, httpx.ConnectError)


@dataclass
class Audit:
    """What the store and billing hold, measured against what the load was told."""

    commands: int
    events: int
    lost: int
    wrong_bills: int
    drain_s: float
    cut: int  # commands stored whose caller got no answer (the connection broke mid-request)


def audited(
    suite: str,
    rounds: int,
    result: Audit,
    load: Load,
    recover_s: float,
    *,
    applied_twice: int | None = None,
) -> Figures:
    """The summary row of a run under `load` checked by `audit`; applied twice is the audit's
    wrong bills unless the test counted it otherwise."""
    twice = result.wrong_bills if applied_twice is None else applied_twice
    return Figures(
        suite,
        rounds,
        result.commands,
        result.events,
        result.lost,
        twice,
        load.server_errors(),
        recover_s,
    )


def audit(
    system: System, load: Load, *, since: float | None = None, drain_timeout: float = 180
) -> Audit:
    """Every 200 has its events stored; every stored cart is billed exactly to its state.
    `drain_s` counts from `since` (a `time.monotonic()`; now if None) to billing caught up."""
    since = time.monotonic() if since is None else since
    events = system.feed()
    stored = {event["correlation_id"] for event in events}
    ok = [answer for answer in load.answers if answer.status == 200]
    lost = [answer for answer in ok if answer.correlation_id not in stored]
    versions: dict[str, int] = {}
    for event in events:
        versions[event["aggregate_id"]] = max(
            versions.get(event["aggregate_id"], 0), event["version"]
        )
    system.wait_until_billed(versions, drain_timeout)
    drain_s = time.monotonic() - since
    wrong = 0
    for cart_id in versions:
        cart = system.http.get(f"{system.cart.url}/carts/{cart_id}").json()
        wrong += system.bill(cart_id) != expected_bill(cart)
    cut = sum(a.status == 0 and a.correlation_id in stored for a in load.answers)
    return Audit(len(ok), len(events), len(lost), wrong, drain_s, cut)


class StreamWatch:
    """Reads the `CART` stream's message ids as it grows, so a test can tell which outbox
    rows were published (acked by JetStream) but not yet marked when the cart service died."""

    def __init__(self, nats_url: str, data_dir: Path) -> None:
        self.nats_url, self.database = nats_url, data_dir / "events.db"
        self.ids: set[str] = set()
        self._next_seq = 1

    def published_unmarked(self) -> int:
        """Outbox rows still pending whose event is already in the stream."""
        asyncio.run(self._read_new())
        with sqlite3.connect(self.database) as db:
            rows = db.execute("SELECT event_id FROM outbox WHERE published_at IS NULL")
            return sum(event_id in self.ids for (event_id,) in rows)

    async def _read_new(self) -> None:
        client = await nats.connect(self.nats_url)
        try:
            js = client.jetstream()
            last = (await js.stream_info("CART")).state.last_seq
            for seq in range(self._next_seq, last + 1):
                message = await js.get_msg("CART", seq)
                self.ids.add((message.headers or {}).get("Nats-Msg-Id", ""))
            self._next_seq = last + 1
        finally:
            await client.close()
