"""The `msc` command tree."""

from __future__ import annotations

import typer

from microservice_connector.cli import services
from microservice_connector.cli.cart import cart_app
from microservice_connector.cli.contract import asyncapi
from microservice_connector.cli.events import events_app
from microservice_connector.cli.inspect import billing_app, deadletter_app, outbox_app
from microservice_connector.cli.snapshots import snapshots_app

app = typer.Typer(
    name="msc",
    help="Microservice Connector: an event-sourced cart, its event store, outbox and billing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
services.register(app)
app.add_typer(cart_app, name="cart")
app.add_typer(events_app, name="events")
app.add_typer(outbox_app, name="outbox")
app.add_typer(deadletter_app, name="deadletter")
app.add_typer(billing_app, name="billing")
app.add_typer(snapshots_app, name="snapshots")
app.command("asyncapi")(asyncapi)


def main() -> None:
    """Entry point of the `msc` script."""
    app()
