"""The `msc` command tree."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from microservice_connector.cli.cart import cart_app
from microservice_connector.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    fail,
    load_settings,
)
from microservice_connector.cli.events import events_app
from microservice_connector.eventstore import DatabaseUnavailable

app = typer.Typer(
    name="msc",
    help="Microservice Connector: an event-sourced cart, its event store, outbox and billing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(events_app, name="events")
app.add_typer(cart_app, name="cart")

HostOption = Annotated[
    str | None, typer.Option("--host", help="Address to listen on [env MSC_HOST; 127.0.0.1]")
]


@app.command("cart-service")
def cart_service(
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="[env MSC_CART_PORT; default 8080]"),
    ] = None,
    host: HostOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Run the cart service's HTTP API (what its container runs)."""
    from microservice_connector.cart_service.main import run_cart_service

    settings = load_settings(
        data_dir=data_dir, database_url=database_url, cart_port=port, host=host
    )
    _configure_logging()
    try:
        run_cart_service(settings, host=settings.host, port=settings.cart_port)
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def main() -> None:
    """Entry point of the `msc` script."""
    app()
