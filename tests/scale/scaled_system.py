"""The system scaled out, as processes on loopback: several cart instances sharing one
PostgreSQL event store, several billing instances sharing one PostgreSQL billing database and
one durable consumer (or consumer group), over whatever broker `env` names.

Each instance is a `support.reliability.Service` (SIGKILL and start again on its port), logs
JSON, and has its own `MSC_INSTANCE_ID`. `ScaledSystem` reads both databases directly, so a
test can tell what is stored, what billing applied and which instance applied what, even of
instances that were killed: billing logs every applied event (after its commit) to a log file
that outlives the process.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from support import diagnosis
from support.nats import NatsServer
from support.processes import free_port, wait_for
from support.reliability import Service, System
from support.system import expected_bill

INSTANCES = 3


@dataclass
class ScaledSystem:
    """Cart and billing instances, their two shared databases, and what they hold."""

    data_dir: Path
    carts: list[Service]
    billings: list[Service]
    cart_db: str
    billing_db: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    @contextmanager
    def diagnosed(self) -> Iterator[None]:
        """On a failure inside the block, print every instance's stacks and the database's
        sessions (pytest shows them with the failure): what a stuck instance waits on."""
        try:
            yield
        except Exception:  # a failed check, or a call to an instance that timed out
            print(f"instances' stacks:\n{diagnosis.stacks(self.carts + self.billings)}")
            print(f"database sessions:\n{diagnosis.database_sessions(self.cart_db)}")
            raise

    @property
    def cart_urls(self) -> list[str]:
        """Every cart instance's base URL, running or not."""
        return [cart.url for cart in self.carts]

    def view(self) -> System:
        """A running cart and a running billing instance, as `support.reliability.audit`
        reads the system through them (both read the shared databases)."""
        cart = next(service for service in self.carts if service.process is not None)
        billing = next(service for service in self.billings if service.process is not None)
        # `audit()` never reads `System.nats`; a scaled system has no single nats-server.
        return System(self.data_dir, cast(NatsServer, None), cart, billing, self.http)

    def stored_versions(self) -> dict[str, int]:
        """Each cart's latest stored version, straight from the event store."""
        rows = _query(
            self.cart_db, "SELECT aggregate_id, max(version) FROM events GROUP BY aggregate_id"
        )
        return {cart_id: version for cart_id, version in rows}

    def billed_versions(self) -> dict[str, int]:
        """Each cart's version billing applied last, straight from billing's database."""
        return {cart_id: version for cart_id, version in _query(self.billing_db, _BILLED)}

    def wait_until_billed_through(self, versions: dict[str, int], timeout: float) -> None:
        """Poll until billing has applied at least `versions` of every cart."""

        def through() -> bool:
            billed = self.billed_versions()
            return all(billed.get(cart_id, 0) >= v for cart_id, v in versions.items())

        wait_for(through, timeout, f"billing to apply the {len(versions)} carts' stored events")

    def kill_cart_holding_leases(self, cart: Service, timeout: float) -> list[int]:
        """SIGKILL `cart` at a moment its relay holds leased, unpublished outbox rows; returns
        the ids of those its dead relay left behind ([] if no such moment came in `timeout` s).

        The relay holds rows only between its claim and its mark, a few milliseconds: when
        such rows are seen, the process is frozen (SIGSTOP) and looked at again once a mark
        it had already sent has committed, then killed if it still holds some, else let go
        on (SIGCONT) to try again."""
        assert cart.process is not None
        process, relay_id = cart.process, instance_id(cart)
        engine = create_engine(self.cart_db, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        held = text(
            "SELECT id FROM outbox WHERE published_at IS NULL AND claimed_by = :relay "
            "AND claimed_until > now()"
        )
        try:
            with engine.connect() as connection:

                def holding() -> list[int]:
                    return [row_id for (row_id,) in connection.execute(held, {"relay": relay_id})]

                def settled() -> list[int]:
                    """What it holds once the frozen process's last commit, if one was on
                    its way to the server, has shown (two reads 20 ms apart agree)."""
                    seen, settle_by = holding(), time.monotonic() + 1.0
                    while time.monotonic() < settle_by:
                        time.sleep(0.02)  # the spacing of the polls, within the deadline
                        now = holding()
                        if now == seen:
                            return now
                        seen = now
                    return seen

                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if not holding():
                        continue
                    process.send_signal(signal.SIGSTOP)
                    if settled():
                        break
                    process.send_signal(signal.SIGCONT)
                cart.kill()
                return holding()
        finally:
            engine.dispose()

    def wait_until_published(self, row_ids: list[int], timeout: float) -> None:
        """Poll until every one of these outbox rows is marked published."""
        ids = ", ".join(str(int(row_id)) for row_id in row_ids) or "NULL"
        sql = f"SELECT count(*) FROM outbox WHERE published_at IS NULL AND id IN ({ids})"
        wait_for(
            lambda: _query(self.cart_db, sql)[0][0] == 0,
            timeout,
            f"another relay to publish the {len(row_ids)} rows the dead one held",
        )

    def published_by_relay(self) -> Counter[str]:
        """How many outbox rows each relay published (the last lease holder of each row)."""
        rows = _query(
            self.cart_db,
            "SELECT claimed_by, count(*) FROM outbox WHERE published_at IS NOT NULL "
            "GROUP BY claimed_by",
        )
        return Counter({str(relay): count for relay, count in rows})

    def applied_by_instance(self) -> dict[str, Counter[str]]:
        """Per billing instance, how often it logged each event id as applied (over all its
        lives: the log is appended to across restarts)."""
        return {instance_id(billing): _applied_in(billing.log) for billing in self.billings}

    def stored_event_ids(self) -> set[str]:
        """The ids of every stored cart event."""
        return {event_id for (event_id,) in _query(self.cart_db, "SELECT event_id FROM events")}

    def invoice_problems(self, versions: dict[str, int]) -> list[str]:
        """Checked-out carts whose invoice is missing or differs from the model, and carts
        invoiced (or announced by `InvoiceIssued`) other than once."""
        problems = []
        issued = Counter(
            cart_id for (cart_id,) in _query(self.billing_db, "SELECT cart_id FROM invoices")
        )
        announced = Counter(
            json.loads(data)["cart_id"]
            for (data,) in _query(
                self.billing_db, "SELECT event_data FROM events WHERE event_type = 'InvoiceIssued'"
            )
        )
        view = self.view()
        for cart_id in versions:
            cart = self.http.get(f"{view.cart.url}/carts/{cart_id}").json()
            if cart["status"] != "checked_out":
                if issued[cart_id] or announced[cart_id]:
                    problems.append(f"{cart_id}: invoiced but not checked out")
                continue
            if (issued[cart_id], announced[cart_id]) != (1, 1):
                problems.append(f"{cart_id}: {issued[cart_id]} invoices, {announced[cart_id]} sent")
                continue
            invoice = self.http.get(f"{view.billing.url}/invoices/{cart_id}").json()
            bill = expected_bill(cart)
            if (invoice["lines"], invoice["total_cents"]) != (bill["lines"], bill["total_cents"]):
                problems.append(f"{cart_id}: invoice {invoice} is not {bill}")
        return problems

    def invoice_count(self) -> int:
        """How many invoices billing has issued."""
        count: int = _query(self.billing_db, "SELECT count(*) FROM invoices")[0][0]
        return count

    def commands_served(self) -> dict[str, float]:
        """Commands each running cart instance answered `ok` since it last started."""
        return {
            cart.url: self.view().metric(cart.url, "msc_cart_commands_total", outcome="ok")
            for cart in self.carts
            if cart.process is not None
        }


_BILLED = "SELECT cart_id, last_version FROM bills"


def instance_id(service: Service) -> str:
    """The `MSC_INSTANCE_ID` the service runs with (its relay's id too)."""
    return service.env["MSC_INSTANCE_ID"]


def _query(url: str, sql: str) -> list[Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)))
    finally:
        engine.dispose()


def _applied_in(log: Path) -> Counter[str]:
    applied: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with suppress(ValueError):
            entry = json.loads(line)
            if entry.get("outcome") == "applied" and "event_id" in entry:
                applied[entry["event_id"]] += 1
    return applied


@contextmanager
def running_scaled_system(
    data_dir: Path,
    *,
    cart_db: str,
    billing_db: str,
    env: dict[str, str],
    instances: int = INSTANCES,
) -> Iterator[ScaledSystem]:
    """`instances` cart and `instances` billing processes on free ports, all started and
    answering; every one is stopped (SIGTERM) at the end."""
    services: dict[str, list[Service]] = {"cart-service": [], "billing-service": []}
    for name, database in (("cart-service", cart_db), ("billing-service", billing_db)):
        for n in range(1, instances + 1):
            short = name.removesuffix("-service")
            folder = data_dir / f"{short}-{n}"
            folder.mkdir(parents=True, exist_ok=True)
            instance_env = {**env, "MSC_INSTANCE_ID": f"{short}-{n}", "MSC_LOG_FORMAT": "json"}
            if name == "billing-service":  # each heals from its own cart instance's store
                carts = services["cart-service"]
                instance_env["MSC_CART_STORE_URL"] = carts[(n - 1) % len(carts)].url
            args = ["--data-dir", str(folder), "--database-url", database]
            service = Service(name, args, free_port(), folder / "service.log", instance_env)
            services[name].append(service)
    system = ScaledSystem(
        data_dir, services["cart-service"], services["billing-service"], cart_db, billing_db
    )
    with ExitStack() as stack:
        stack.callback(system.http.close)
        for service in [*system.carts, *system.billings]:
            stack.callback(_terminate, service)
        started = time.monotonic()
        for service in [*system.carts, *system.billings]:
            service.start()
        print(f"\n{2 * instances} instances up in {time.monotonic() - started:.1f} s")
        yield system


def _terminate(service: Service) -> None:
    with suppress(AssertionError):
        service.terminate(timeout=30)
