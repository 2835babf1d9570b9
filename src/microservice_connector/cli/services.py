"""`msc up`, `msc demo`, `msc cart-service`, `msc billing-service`: run the system."""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.table import Table

from microservice_connector.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    console,
    fail,
    load_settings,
)
from microservice_connector.runtime.logs import configure_logging
from microservice_connector.runtime.system import StartupFailed, System, free_port
from microservice_connector.settings import Settings

HostOption = Annotated[
    str | None,
    typer.Option("--host", help="Address to listen on (env MSC_HOST; default 127.0.0.1)"),
]
NatsUrlOption = Annotated[
    str | None,
    typer.Option(
        "--nats-url",
        help="NATS server URL(s), comma-separated (env MSC_NATS_URL; default nats://127.0.0.1:4222)",
    ),
]


class Broker(StrEnum):
    """The brokers the system runs on."""

    nats = "nats"
    kafka = "kafka"


BrokerOption = Annotated[
    Broker | None,
    typer.Option("--broker", help="nats (JetStream) or kafka (env MSC_BROKER; default nats)"),
]
KafkaBootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--kafka-bootstrap",
        help="Kafka bootstrap host:port, comma-separated (env MSC_KAFKA_BOOTSTRAP; "
        "default 127.0.0.1:9092); SASL/TLS via MSC_KAFKA_* (see README)",
    ),
]


def broker_name(broker: Broker | None) -> str | None:
    """The option's value as `Settings.broker` takes it."""
    return None if broker is None else broker.value


def register(app: typer.Typer) -> None:
    """Add the run commands to `app`."""
    app.command("cart-service")(cart_service)
    app.command("billing-service")(billing_service)
    app.command("up")(up)
    app.command("demo")(demo)


def cart_service(
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=1, max=65535, help="Port to listen on (env MSC_CART_PORT; default 8080)"
        ),
    ] = None,
    host: HostOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
    nats_url: NatsUrlOption = None,
    relay: Annotated[
        bool, typer.Option(help="Publish the outbox to the broker (off: it stays in the outbox).")
    ] = True,
    broker: BrokerOption = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
) -> None:
    """Run the cart service's HTTP API and its outbox relay (what its container runs)."""
    from microservice_connector.cart_service.main import run_cart_service

    settings = load_settings(
        data_dir=data_dir,
        database_url=database_url,
        cart_port=port,
        host=host,
        nats_url=nats_url,
        broker=broker_name(broker),
        kafka_bootstrap=kafka_bootstrap,
    )
    _run_service(
        settings,
        lambda: run_cart_service(
            settings, host=settings.host, port=settings.cart_port, relay=relay
        ),
    )


def _run_service(settings: Settings, run: Callable[[], None]) -> None:
    """Log as configured, run the service, and turn a missing database into a clear exit 2."""
    from microservice_connector.eventstore import DatabaseUnavailable

    configure_logging(settings.log_format, instance=settings.instance())
    try:
        run()
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)


def billing_service(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port to listen on (env MSC_BILLING_PORT; default 8081)",
        ),
    ] = None,
    host: HostOption = None,
    data_dir: DataDirOption = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Billing database URL (env MSC_BILLING_DATABASE_URL; default sqlite:///<data-dir>/billing.db)",
        ),
    ] = None,
    nats_url: NatsUrlOption = None,
    broker: BrokerOption = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
) -> None:
    """Run the billing service: consumes cart.events, serves bills, invoices and prices."""
    from microservice_connector.billing_service.main import run_billing_service

    settings = load_settings(
        data_dir=data_dir,
        billing_database_url=database_url,
        billing_port=port,
        host=host,
        nats_url=nats_url,
        broker=broker_name(broker),
        kafka_bootstrap=kafka_bootstrap,
    )
    _run_service(
        settings,
        lambda: run_billing_service(settings, host=settings.host, port=settings.billing_port),
    )


def up(
    data_dir: DataDirOption = None,
    cart_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Cart API port (env MSC_CART_PORT; default 8080)"),
    ] = None,
    billing_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Billing API port (env MSC_BILLING_PORT; default 8081)"
        ),
    ] = None,
    nats_url: NatsUrlOption = None,
    host: HostOption = None,
    broker: BrokerOption = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
) -> None:
    """Run the whole system in the foreground: an embedded nats-server with JetStream (unless
    --nats-url or MSC_NATS_URL names one), the cart service with its relay, and billing. All
    data lives under --data-dir; run it again on the same folder to carry on. Ctrl-C stops.

    With --broker kafka and no --kafka-bootstrap (nor MSC_KAFKA_BOOTSTRAP), it embeds Tansu, a
    Kafka-compatible broker that keeps its data in memory only: stopping `msc up` loses the
    topics and the consumer offsets (the outbox and billing's database are kept, so billing
    stays right). Name a real Kafka cluster with --kafka-bootstrap for a durable broker."""
    settings = load_settings(
        data_dir=data_dir,
        host=host,
        broker=broker_name(broker),
        cart_port=cart_port,
        billing_port=billing_port,
        kafka_bootstrap=kafka_bootstrap,  # checked here; `System` embeds Tansu without one
    )
    if settings.cart_port == settings.billing_port:
        fail(f"the cart and billing services cannot share port {settings.cart_port}", 2)
    given = nats_url or _env("MSC_NATS_URL")
    system = System(
        settings.data_dir.resolve(),
        settings.cart_port,
        settings.billing_port,
        settings.host,
        nats_url=given,
        broker=settings.broker,
        kafka_bootstrap=kafka_bootstrap or _env("MSC_KAFKA_BOOTSTRAP"),
    )
    _run_until_signalled(system)


def _env(name: str) -> str | None:
    import os

    return os.environ.get(name) or None


def _run_until_signalled(system: System) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    console.print("starting… (logs in " + str(system.data_dir / "logs") + ")")
    try:
        system.start()
    except StartupFailed as exc:
        fail(str(exc), 2)
    except KeyboardInterrupt:
        console.print("stopped before it was up")
        return
    try:
        _print_addresses(system)  # a signal while it prints stops everything as one later
        while (failed := system.failed_part()) is None:
            time.sleep(0.5)
        console.print(f"[red]{failed.name} exited unexpectedly:[/]\n{failed.tail()}")
        system.stop()
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping: letting requests finish, the relay flush, the consumer ack…")
        system.stop()
        console.print("stopped cleanly")


def _print_addresses(system: System) -> None:
    table = Table(title="Microservice Connector is up", show_header=False)
    table.add_row("event browser", f"http://{system.host}:{system.cart_port}/ui/")
    table.add_row("cart API", f"http://{system.host}:{system.cart_port}")
    table.add_row("billing API", f"http://{system.host}:{system.billing_port}")
    if system.broker == "kafka":
        table.add_row("Kafka", system.kafka_bootstrap or "")
    else:
        table.add_row("NATS", system.nats_url or "")
    table.add_row("data", str(system.data_dir))
    table.add_row(
        "try",
        f"curl -X POST http://{system.host}:{system.cart_port}/carts/cart-123/items "
        '-H \'Content-Type: application/json\' -d \'{"item_id": "item-001", "quantity": 2}\'',
    )
    console.print(table)
    console.print("Ctrl-C stops everything cleanly.")


def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="Keep the demo's data here (default: a temporary folder).")
    ] = None,
    cart_id: Annotated[str, typer.Option(help="The cart to fill.")] = "cart-123",
    chaos: Annotated[
        bool,
        typer.Option(
            help="Then freeze billing, send commands, kill everything, throw the broker's data "
            "away, restart, and time the bills healing from the event store."
        ),
    ] = False,
) -> None:
    """Start the system on its own defaults (no MSC_* setting applies), replay the original
    scenario (add, remove, checkout), print the cart, its events and the invoice (with
    --chaos, lose the broker and heal), and stop."""
    from microservice_connector.cli.demo_chaos import run_chaos
    from microservice_connector.cli.demo_scenario import run_scenario

    with tempfile.TemporaryDirectory(prefix="msc-demo-") as scratch:
        folder = data_dir or Path(scratch)
        system = System(folder.resolve(), free_port(), free_port(), isolated=True)
        console.print(f"starting the system in {folder} …")
        try:
            with system:
                run_scenario(system, cart_id)
                if chaos:
                    run_chaos(system)
        except StartupFailed as exc:
            fail(str(exc), 2)
