"""`msc outbox`, `msc deadletter`, `msc billing`: inspect and repair the stores."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any, cast

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from microservice_connector.cli.common import (
    DataDirOption,
    console,
    existing_database,
    fail,
    load_settings,
)
from microservice_connector.cli.services import (
    BrokerOption,
    KafkaBootstrapOption,
    NatsUrlOption,
    broker_name,
)
from microservice_connector.settings import Settings

if TYPE_CHECKING:
    from microservice_connector.billing_service.application import CartEventIn
    from microservice_connector.events.registry import EventRegistry

CONNECT_TIMEOUT_S = 5.0

outbox_app = typer.Typer(
    help="The transactional outbox: what is still to publish.", no_args_is_help=True
)
deadletter_app = typer.Typer(help="Messages billing could not process.", no_args_is_help=True)
billing_app = typer.Typer(help="Billing's read model.", no_args_is_help=True)


@outbox_app.command("status")
def outbox_status(
    data_dir: DataDirOption = None,
    billing: Annotated[
        bool, typer.Option("--billing", help="Billing's outbox instead of the cart's.")
    ] = False,
) -> None:
    """Pending rows, the oldest one's age, and how many were published: of the cart store
    (env MSC_DATABASE_URL; default <data dir>/events.db), or with --billing of billing's
    (env MSC_BILLING_DATABASE_URL; default <data dir>/billing.db)."""
    from microservice_connector.eventstore import DatabaseUnavailable, SqlEventStore

    settings = load_settings(data_dir=data_dir)
    url = settings.billing_db_url() if billing else settings.cart_database_url()
    try:
        store = SqlEventStore(existing_database(url), outbox_topic=None)
        try:
            status = store.outbox.status()
        finally:
            store.close()
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)
    console.print(f"outbox of {store.url}")
    console.print(f"  pending:   {status.pending}")
    console.print(
        f"  oldest:    {status.oldest_age_seconds():.1f} s old"
        if status.pending
        else "  oldest:    -"
    )
    console.print(f"  published: {status.published}")
    if (first := status.first_retried) is not None:
        console.print(
            f"  retried:   {status.retried}, the oldest event {first.event_id} after"
            f" {first.attempts} attempts: {first.last_error or 'no error kept'}",
            markup=False,
        )


@deadletter_app.command("list")
def deadletter_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many.")] = 50,
    nats_url: NatsUrlOption = None,
    broker: BrokerOption = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
) -> None:
    """List dead letters with their error (NATS: stream DEADLETTER; Kafka: topic
    deadletter.cart.events, replayed ones left out)."""
    settings = load_settings(
        nats_url=nats_url, broker=broker_name(broker), kafka_bootstrap=kafka_bootstrap
    )
    letters = asyncio.run(_with_dead_letters(settings, lambda dl, _: dl.list(limit)))
    table = Table(title=f"{len(letters)} dead letter(s)")
    for column in ("seq", "topic", "event", "aggregate", "failed at", "error"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        headers = letter.message.headers
        table.add_row(
            str(letter.sequence),
            letter.message.topic,
            headers.get("event-type", "?"),
            f"{headers.get('aggregate-id', '?')} v{headers.get('aggregate-version', '?')}",
            letter.failed_at,
            letter.error,
        )
    console.print(table)


@deadletter_app.command("replay")
def deadletter_replay(
    sequences: Annotated[
        list[int] | None,
        typer.Argument(min=1, max=2**63 - 1, help="Dead letters to replay (seq)."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    nats_url: NatsUrlOption = None,
    broker: BrokerOption = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
) -> None:
    """Publish dead letters again to their original topic; each is removed once acked."""
    from microservice_connector.messaging.message import PublishResult

    if not sequences and not all_:
        fail("name the dead letters to replay (see `msc deadletter list`), or pass --all", 2)

    settings = load_settings(
        nats_url=nats_url, broker=broker_name(broker), kafka_bootstrap=kafka_bootstrap
    )

    async def replay(dead_letters, publisher):  # type: ignore[no-untyped-def]
        chosen = sequences or [letter.sequence for letter in await dead_letters.list(10_000)]
        replayed = []
        for seq in chosen:
            try:
                replayed.append((seq, await dead_letters.replay(seq, publisher)))
            except KeyError:
                replayed.append((seq, PublishResult(str(seq), error="no dead letter there")))
        return replayed

    results = asyncio.run(_with_dead_letters(settings, replay))
    failures = 0
    for sequence, result in results:
        if result.acknowledged:
            console.print(f"[green]✓[/] {sequence} replayed")
        else:
            failures += 1
            console.print(f"[red]✗[/] {sequence}: {result.error}")
    if failures:
        raise typer.Exit(1)


def _feed_page(
    http: httpx.Client, cart_url: str, after: int, page: int, applied: int
) -> dict[str, Any]:
    """One page of the cart service's feed, or a clear exit saying what state billing is in."""
    try:
        response = http.get("/events", params={"after": after, "limit": page})
        response.raise_for_status()
        feed = response.json()
        if (
            not isinstance(feed, dict)
            or not isinstance(feed.get("events"), list)
            or not all(isinstance(event, dict) for event in feed["events"])
            or "next_after" not in feed
        ):
            raise ValueError("not the cart service's feed")
    except (httpx.HTTPError, ValueError) as exc:
        reason = (
            f"HTTP {exc.response.status_code}"
            if isinstance(exc, httpx.HTTPStatusError)
            else str(exc)
        )
        fail(f"cannot read the feed at {cart_url}/events ({reason}); {_so_far(after, applied)}", 2)
    return cast(dict[str, Any], feed)


def _decoded(
    feed: dict[str, Any], registry: EventRegistry, after: int, applied: int
) -> list[CartEventIn]:
    """The page's events as billing applies them, or a clear exit naming the one it cannot
    read (an event of a newer cart service, say) and what state billing is in."""
    from microservice_connector.billing_service.infrastructure.cart_messages import (
        PoisonMessage,
        event_from_feed,
    )

    try:
        return [event_from_feed(item, registry) for item in feed["events"]]
    except (PoisonMessage, KeyError, TypeError, ValueError) as exc:
        problem = f"cannot read an event of the feed after position {after}: {exc}"
        fail(f"{problem}; {_so_far(after, applied)}", 1)


def _so_far(after: int, applied: int) -> str:
    """What billing holds when a rebuild stops: the first page is read before the reset."""
    return "nothing was changed" if applied == 0 and after == 0 else _partly(applied)


def _partly(applied: int) -> str:
    return f"billing holds the first {applied} events only: run the rebuild again"


async def _with_dead_letters(settings: Settings, work):  # type: ignore[no-untyped-def]
    """Run `work(dead_letters, publisher)` on the broker `settings` name; exit 2 if it does
    not answer within `CONNECT_TIMEOUT_S`."""
    from microservice_connector.runtime.broker_link import open_broker_link

    link = open_broker_link(settings, name="msc-cli")
    where = settings.kafka_bootstrap if settings.broker == "kafka" else settings.nats_url
    try:
        try:
            await asyncio.wait_for(link.run(asyncio.Event()), CONNECT_TIMEOUT_S)
        except TimeoutError:
            fail(f"cannot reach {settings.broker} at {where}", 2)
        try:
            return await work(await link.dead_letters(), await link.publisher())
        except ConnectionError as exc:  # BrokerUnavailable: the broker refused or went away
            fail(str(exc), 2)
    finally:
        await link.close()


@billing_app.command("rebuild")
def billing_rebuild(
    data_dir: DataDirOption = None,
    cart_url: Annotated[
        str | None, typer.Option("--cart-url", help="Cart service URL (env MSC_CART_URL)")
    ] = None,
    page: Annotated[
        int, typer.Option(min=1, max=1000, help="Feed events read per request.")
    ] = 1000,
) -> None:
    """Drop billing's bills and invoices and replay every cart event from the cart service's
    `GET /events` feed: each priced at the price in effect at its own time (prices are
    billing's own events), each invoice dated by its checkout, so bills and invoices come
    out identical to the originals."""
    from microservice_connector.billing_service.application import BillingLedger
    from microservice_connector.billing_service.main import open_billing_repository
    from microservice_connector.events.registry import default_registry
    from microservice_connector.eventstore import DatabaseUnavailable
    from microservice_connector.eventstore.failures import DataRejected
    from microservice_connector.web.access import read_headers

    settings = load_settings(data_dir=data_dir, cart_url=cart_url)
    existing_database(settings.billing_db_url())  # a rebuild at a mistyped path creates nothing
    try:
        repository = open_billing_repository(settings)
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)
    ledger, registry = BillingLedger(repository), default_registry()
    after, applied = 0, 0
    try:
        with (
            httpx.Client(
                base_url=settings.cart_url, headers=read_headers(settings), timeout=30
            ) as http,
            Progress(
                TextColumn("rebuilding bills"),
                BarColumn(),
                TextColumn("{task.completed} events"),
                TimeElapsedColumn(),
                console=console,
            ) as progress,
        ):
            # The first page is read and decoded before anything is dropped: a cart service
            # that cannot be reached, or an event billing cannot read, leaves billing as it was.
            feed = _feed_page(http, settings.cart_url, after, page, applied)
            events = _decoded(feed, registry, after, applied)
            repository.reset_read_model()
            task = progress.add_task("rebuild", total=None)
            while events:
                try:
                    ledger.apply_batch(events)
                except DataRejected as exc:  # the same event fails the same way every time
                    fail(f"cannot rebuild past position {after}: {exc}; {_partly(applied)}", 1)
                applied += len(events)
                after = feed["next_after"]
                progress.update(task, completed=applied)
                feed = _feed_page(http, settings.cart_url, after, page, applied)
                events = _decoded(feed, registry, after, applied)
    finally:
        repository.close()
    console.print(f"rebuilt billing from {applied} cart events")
