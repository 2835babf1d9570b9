"""`msc events`: read the event store directly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from microservice_connector.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    console,
    existing_database,
    fail,
    load_settings,
)

if TYPE_CHECKING:
    from microservice_connector.events import RecordedEvent

events_app = typer.Typer(help="Inspect the cart event store.", no_args_is_help=True)


@events_app.command("list")
def list_events(
    aggregate: Annotated[
        str | None, typer.Option("--aggregate", help="Only this cart's events, by version.")
    ] = None,
    after: Annotated[
        int, typer.Option(min=0, max=2**63 - 1, help="Start after this global position.")
    ] = 0,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Print stored events as a table: position, cart, version, type and schema version,
    codec, and the payload decoded to JSON whatever its codec (it holds the time)."""
    from microservice_connector.events import JSON_CONTENT_TYPE, PROTOBUF_CONTENT_TYPE
    from microservice_connector.eventstore import DatabaseUnavailable, SqlEventStore

    codec_names = {JSON_CONTENT_TYPE: "json", PROTOBUF_CONTENT_TYPE: "protobuf"}
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    try:
        store = SqlEventStore(existing_database(settings.cart_database_url()), outbox_topic=None)
        try:
            if aggregate is None:
                found = store.read_all(after, limit)
            else:
                found = [e for e in store.load(aggregate) if e.position > after][:limit]
        finally:
            store.close()
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)
    table = Table(title=f"events in {store.url}")
    table.add_column("pos", no_wrap=True)
    table.add_column("aggregate", overflow="fold")
    for column in ("v", "type", "codec"):
        table.add_column(column, no_wrap=True)
    table.add_column("data", overflow="fold", ratio=1)
    for event in found:
        table.add_row(
            str(event.position),
            event.aggregate_id,
            str(event.version),
            f"{event.event_type} v{event.schema_version}",
            codec_names.get(event.content_type, event.content_type),
            _shown(event),
        )
    console.print(table)
    if not found:
        console.print("no events" + (f" for {aggregate}" if aggregate else ""))


def _shown(event: RecordedEvent) -> str:
    """The payload as compact JSON, or why it cannot be read."""
    import msgspec

    from microservice_connector.events import EventDecodeError, payload_builtins

    try:
        return msgspec.json.encode(payload_builtins(event)).decode()
    except EventDecodeError as exc:
        return f"<unreadable: {exc}>"
