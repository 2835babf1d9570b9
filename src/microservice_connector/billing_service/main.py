"""The billing service's composition root: its database, consumer, relay and HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.infrastructure.cart_store import CartStore
from microservice_connector.billing_service.infrastructure.deadletter_api import (
    DeadLetterBox,
    deadletter_router,
)
from microservice_connector.billing_service.infrastructure.feed_catch_up import FeedCatchUp
from microservice_connector.billing_service.infrastructure.feed_position import saved_position
from microservice_connector.billing_service.infrastructure.feed_watermark import FeedWatermark
from microservice_connector.billing_service.infrastructure.gap_repair import GapRepair
from microservice_connector.billing_service.infrastructure.handling_api import (
    LagReading,
    handling_router,
)
from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog
from microservice_connector.billing_service.infrastructure.http_api import create_billing_app
from microservice_connector.billing_service.infrastructure.metrics import BillingMetrics
from microservice_connector.billing_service.infrastructure.sql_repository import (
    BILLING_TOPIC,
    SqlBillingRepository,
)
from microservice_connector.billing_service.infrastructure.store_events import StoreEventApplier
from microservice_connector.events.codecs import codec_named
from microservice_connector.events.registry import EventRegistry, default_registry
from microservice_connector.eventstore import SqlEventStore
from microservice_connector.eventstore.broker_audit import BrokerAudit
from microservice_connector.eventstore.engine import connections_in_use
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.consumer import Consumer
from microservice_connector.messaging.middleware import (
    chain,
    dead_letter,
    log_outcomes,
    recover,
    retry_with_backoff,
)
from microservice_connector.runtime.background import Background, until_stopped
from microservice_connector.runtime.broker_link import Subscription, open_broker_link
from microservice_connector.runtime.relay_metrics import BrokerLossMetrics
from microservice_connector.settings import Settings
from microservice_connector.tracing import configure_tracing
from microservice_connector.tracing.http import trace_commands
from microservice_connector.tracing.messaging import traced_consume
from microservice_connector.web.access import access_tokens
from microservice_connector.web.cors import allow_ui
from microservice_connector.web.guards import protect
from microservice_connector.web.head import HeadAsGet
from microservice_connector.web.http_metrics import instrument
from microservice_connector.web.metrics import metrics_router, service_registry
from microservice_connector.web.server import serve

log = logging.getLogger(__name__)
CART_TOPIC, DURABLE = "cart.events", "billing"
MAX_ATTEMPTS = 5
LAG_INTERVAL_S = 2.0


def open_billing_repository(settings: Settings) -> SqlBillingRepository:
    """Billing's database with its schema and default prices; its units of work take turns
    with its event store's own writes on one writer pool (on SQLite one connection, so they
    queue there rather than in SQLite's busy wait), and its reads never wait for either.
    Raises `DatabaseUnavailable`."""
    store = SqlEventStore(
        settings.billing_db_url(),
        outbox_topic=BILLING_TOPIC,
        sqlite_synchronous=settings.sqlite_synchronous,
        codec=codec_named(settings.serializer),
    )
    try:
        store.ping()
        return SqlBillingRepository(store, writer=store.writer, reader=store.reader)
    except BaseException:
        store.close()
        raise


def build_billing_app(settings: Settings, *, events: EventRegistry | None = None) -> FastAPI:
    """Wire billing: consume `cart.events` as durable `billing`, publish `billing.events`;
    cart events are decoded (and upcast) by `events`, the default registry if None."""
    configure_tracing("billing-service", settings.broker)
    repository = open_billing_repository(settings)
    ledger = BillingLedger(repository)
    link = open_broker_link(settings, name="billing-service")
    background = Background()
    registry = service_registry("billing", settings.instance())
    metrics = BillingMetrics(registry, ledger)
    handled = HandlingLog()
    cart_events = events or default_registry()
    cart_store = CartStore.open(settings, cart_events)
    # httpx logs every request at INFO: catch-up's polls would drown the events' lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    applier = StoreEventApplier(ledger, handled, metrics.on_healed)
    repair = GapRepair(
        applier,
        cart_store,
        lambda cart_id: _last_version(repository, cart_id),
        grace_s=settings.billing_repair_grace_s,
    )
    watermark = FeedWatermark()
    handler = CartEventHandler(
        ledger,
        cart_events,
        handled,
        gap_wait_s=settings.billing_gap_wait_s,
        repair=repair,
        watermark=watermark,
        apply_on_loop=settings.sqlite_commit_on_loop
        and repository.store.writer.dialect.name == "sqlite",
        writer_free=lambda: connections_in_use(repository.store.writer) == 0,
    )
    catch_up = FeedCatchUp(
        applier,
        cart_store,
        lambda: saved_position(repository),
        link.dead_letters,
        handled,
        repository.last_versions,
        interval_s=settings.billing_catch_up_interval_s,
        settle_s=settings.billing_repair_grace_s,
        watermark=watermark,
    )
    loss_metrics = BrokerLossMetrics(registry)
    lag = LagReading()
    box = DeadLetterBox(link.dead_letters, link.publisher)

    async def consume(stop: asyncio.Event) -> None:
        dead_letters = await until_stopped(link.dead_letters(), stop)
        if dead_letters is None:
            return
        while not stop.is_set():
            try:
                subscriber = await link.subscriber(CART_TOPIC, DURABLE)
                break
            except Exception as exc:  # the broker went away between connect and bind
                log.warning("billing: cannot bind consumer %s yet (%s)", DURABLE, exc)
                await until_stopped(asyncio.sleep(1.0), stop)
        else:
            return
        pipeline = chain(
            metrics.timed(handler),
            traced_consume,
            log_outcomes(),
            dead_letter(dead_letters, max_attempts=MAX_ATTEMPTS),
            retry_with_backoff(),
            recover,
        )
        background.start("consumer-lag", lambda stop: _track_lag(subscriber, metrics, lag, stop))
        try:
            await Consumer(subscriber, pipeline, on_outcome=metrics.on_outcome).run(stop)
        finally:
            await subscriber.close()  # what was delivered and not handled goes back now

    async def relay(stop: asyncio.Event) -> None:
        publisher = await until_stopped(link.publisher(), stop)
        holdings = await until_stopped(link.holdings(), stop)
        if publisher is None or holdings is None:
            return
        outbox = repository.store.outbox
        await OutboxRelay(
            outbox,
            publisher,
            relay_id=settings.instance(),
            lease_seconds=settings.relay_lease_s,
            audit=BrokerAudit(outbox, holdings, [BILLING_TOPIC], observer=loss_metrics)
            if settings.relay_broker_audit
            else None,
            audit_interval=settings.relay_broker_check_s,
        ).run(stop)

    async def start() -> None:
        background.start("broker-link", link.run)
        background.start("billing-consumer", consume)
        background.start("billing-relay", relay)
        background.start("feed-catch-up", catch_up.run)

    async def stop() -> None:
        await background.stop()
        await link.close()
        await cart_store.close()
        repository.close()

    async def database() -> None:
        await asyncio.to_thread(repository.store.ping)

    app = create_billing_app(
        repository,
        checks={"database": database, "broker": link.check},
        on_startup=start,
        on_shutdown=stop,
    )
    app.include_router(deadletter_router(box))
    app.include_router(handling_router(repository, handler.handled, box, lag.get))
    instrument(app, registry)
    trace_commands(app)
    protect(app, access=access_tokens(settings), max_body_bytes=settings.max_body_bytes)
    allow_ui(app, settings.cart_url)
    app.add_middleware(HeadAsGet)
    app.include_router(metrics_router(registry))
    return app


async def _track_lag(
    subscriber: Subscription, metrics: BillingMetrics, lag: LagReading, stop: asyncio.Event
) -> None:
    """Refresh the consumer-lag gauge every few seconds while the consumer runs."""
    while not stop.is_set():
        with contextlib.suppress(Exception):
            lag.value = await subscriber.pending()
            metrics.lag.set(lag.value)
        await until_stopped(asyncio.sleep(LAG_INTERVAL_S), stop)


def _last_version(repository: SqlBillingRepository, cart_id: str) -> int:
    """The last version of the cart billing applied; 0 before its first."""
    stamp = repository.stamp(cart_id)
    return stamp.last_version if stamp else 0


def run_billing_service(settings: Settings, *, host: str, port: int) -> None:
    """Serve billing until SIGINT/SIGTERM; the consumer acks only what it applied."""
    app = build_billing_app(settings)
    serve(app, settings, name="billing service", host=host, port=port)
