"""`msc snapshots`: rebuild the cart snapshots from the events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from microservice_connector.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    console,
    errors,
    existing_database,
    fail,
    load_settings,
)

snapshots_app = typer.Typer(help="Cart snapshots: loading a cart fast.", no_args_is_help=True)


@snapshots_app.command("rebuild")
def rebuild(
    every: Annotated[
        int | None,
        typer.Option(
            "--every",
            min=0,
            help="Snapshot carts of at least N events (env MSC_SNAPSHOT_EVERY; default 100)",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete every cart snapshot, then replay each cart of at least N events from its events
    and store a fresh snapshot of it (N = 0: only delete). Safe while the service runs."""
    from microservice_connector.cart_service.application.cart_snapshots import (
        AGGREGATE_TYPE,
        snapshot_of,
    )
    from microservice_connector.cart_service.domain import ShoppingCart
    from microservice_connector.cart_service.infrastructure.snapshot_codec import (
        JsonCartStateCodec,
    )
    from microservice_connector.events import EventDecodeError, default_registry
    from microservice_connector.events.cart import CartEvent
    from microservice_connector.eventstore import DatabaseUnavailable, SqlEventStore

    settings = load_settings(data_dir=data_dir, database_url=database_url, snapshot_every=every)
    every = settings.snapshot_every
    registry, codec, failed, taken = default_registry(), JsonCartStateCodec(), 0, 0
    try:
        store = SqlEventStore(existing_database(settings.cart_database_url()), outbox_topic=None)
        try:
            snapshots = store.snapshots
            deleted = snapshots.delete_snapshots()
            carts = [
                cart_id
                for cart_id, version in snapshots.aggregates(AGGREGATE_TYPE)
                if every and version >= every
            ]
            with Progress(
                TextColumn("snapshotting carts"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("rebuild", total=len(carts))
                for cart_id in carts:
                    try:
                        decoded = [registry.decode(e) for e in store.load(cart_id)]
                        cart = ShoppingCart.replay(cart_id, cast(list[CartEvent], decoded))
                    except EventDecodeError as exc:
                        failed += 1
                        errors.print(f"[red]✗[/] cart {cart_id}: {exc}", highlight=False)
                    else:
                        snapshots.save_snapshot(snapshot_of(cart, datetime.now(UTC), codec))
                        taken += 1
                    progress.advance(task)
        finally:
            store.close()
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)
    console.print(
        f"deleted {deleted} snapshot(s); took {taken} snapshot(s) of carts with at least "
        f"{every} events"
        if every
        else f"deleted {deleted} snapshot(s); snapshots are off (N = 0)"
    )
    if failed:
        fail(f"{failed} cart(s) could not be replayed", 1)
