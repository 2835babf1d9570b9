"""The cart service's composition root: settings in, a running HTTP server (and relay) out."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi import FastAPI

from microservice_connector.cart_service.application import CartService
from microservice_connector.cart_service.application.idempotency import IdempotentCommands
from microservice_connector.cart_service.infrastructure.asyncapi_api import asyncapi_router
from microservice_connector.cart_service.infrastructure.command_door import CommandDoor
from microservice_connector.cart_service.infrastructure.event_log import LoggingObserver
from microservice_connector.cart_service.infrastructure.http_api import create_app
from microservice_connector.cart_service.infrastructure.idempotency_http import (
    IdempotencyKeys,
    document_idempotency_key,
)
from microservice_connector.cart_service.infrastructure.lineage_api import lineage_router
from microservice_connector.cart_service.infrastructure.live_feed import LiveFeed
from microservice_connector.cart_service.infrastructure.metrics import CartMetrics
from microservice_connector.cart_service.infrastructure.snapshot_codec import JsonCartStateCodec
from microservice_connector.cart_service.infrastructure.ui_routes import (
    UI_PUBLIC,
    CountRequests,
    UiConfig,
    live_feed_router,
    mount_ui,
)
from microservice_connector.events.codecs import codec_named
from microservice_connector.eventstore import GroupCommitStore, SqlEventStore
from microservice_connector.eventstore.broker_audit import BrokerAudit
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.runtime.background import Background, until_stopped
from microservice_connector.runtime.broker_link import BrokerLink, open_broker_link
from microservice_connector.runtime.relay_metrics import BrokerLossMetrics
from microservice_connector.settings import Settings
from microservice_connector.tracing import configure_tracing
from microservice_connector.tracing.context import enabled as tracing_enabled
from microservice_connector.tracing.http import trace_commands
from microservice_connector.web.access import access_tokens
from microservice_connector.web.guards import protect
from microservice_connector.web.head import HeadAsGet
from microservice_connector.web.health import Check
from microservice_connector.web.http_metrics import instrument
from microservice_connector.web.metrics import metrics_router, service_registry
from microservice_connector.web.server import serve

CART_TOPIC = "cart.events"
log = logging.getLogger(__name__)


def build_cart_app(settings: Settings, *, relay: bool = True) -> FastAPI:
    """Open the event store (creating its schema) and wire the API, and unless `relay` is
    False, the outbox relay to the broker (`MSC_BROKER`); raises `DatabaseUnavailable`."""
    configure_tracing("cart-service", settings.broker)
    sql_store = SqlEventStore(
        settings.cart_database_url(),
        outbox_topic=CART_TOPIC,
        sqlite_synchronous=settings.sqlite_synchronous,
        codec=codec_named(settings.serializer),
    )
    sql_store.ping()
    on_sqlite = sql_store.writer.dialect.name == "sqlite"
    store = GroupCommitStore(
        sql_store,
        outbox=sql_store.outbox,
        snapshots=sql_store.snapshots,
        commit_on_loop=on_sqlite and settings.sqlite_commit_on_loop,
    )
    registry = service_registry("cart", settings.instance())
    metrics = CartMetrics(registry, sql_store.outbox)
    service = CartService(
        store,
        max_retries=settings.command_retries,
        observer=LoggingObserver(metrics),
        snapshots=sql_store.snapshots,
        snapshot_codec=JsonCartStateCodec(),
        snapshot_every=settings.snapshot_every,
        save_snapshot=store.save_snapshot,  # after a commit, never holding up the next
    )
    ttl = timedelta(seconds=settings.idempotency_ttl_s)
    idempotent = IdempotentCommands(sql_store.idempotency_keys, service.get_cart, ttl=ttl)
    feed = LiveFeed(
        service.feed,
        lambda: asyncio.to_thread(sql_store.last_position),
        max_streams=settings.live_feed_max_streams,
    )
    store.on_commit(feed.notify)
    checks: dict[str, Check] = {"database": store.ping}
    background: Background | None = None
    link: BrokerLink | None = None
    if relay:
        link = open_broker_link(settings, name="cart-service")
        checks["broker"] = link.check

    async def start() -> None:
        nonlocal background
        background = Background()
        purge_every = min(ttl.total_seconds(), 600.0)
        background.start(
            "idempotency-key-purge", lambda stop: idempotent.purge_until_stopped(stop, purge_every)
        )
        if link is None:
            return
        outbox_relay: OutboxRelay | None = None

        async def run_relay(stop: asyncio.Event) -> None:
            nonlocal outbox_relay
            publisher = await until_stopped(link.publisher(), stop)
            holdings = await until_stopped(link.holdings(), stop)
            if publisher is None or holdings is None:
                return
            audit = BrokerAudit(
                sql_store.outbox, holdings, [CART_TOPIC], observer=BrokerLossMetrics(registry)
            )
            outbox_relay = OutboxRelay(
                sql_store.outbox,
                publisher,
                observer=metrics,
                mark_published=store.mark_published,  # on the writer thread, after a commit
                relay_id=settings.instance(),
                lease_seconds=settings.relay_lease_s,
                audit=audit if settings.relay_broker_audit else None,
                audit_interval=settings.relay_broker_check_s,
            )
            store.on_commit(outbox_relay.wake)
            await outbox_relay.run(stop)

        background.start("broker-link", link.run)
        background.start("outbox-relay", run_relay)

    async def stop() -> None:
        if background is not None:
            await background.stop()
        if link is not None:
            await link.close()
        store.close()

    app = create_app(service, checks=checks, on_startup=start, on_shutdown=stop)
    app.add_middleware(IdempotencyKeys, commands=idempotent)  # just outside both command lanes
    document_idempotency_key(app)
    app.include_router(live_feed_router(feed))
    app.include_router(lineage_router(sql_store))
    app.include_router(asyncapi_router())
    mount_ui(app, UiConfig(billing_url=settings.billing_url))
    app.state.live_feed = feed
    app.state.event_store = store
    measured = instrument(app, registry)
    trace_commands(app)
    access = access_tokens(settings, public_prefixes=UI_PUBLIC)
    protect(app, access=access, max_body_bytes=settings.max_body_bytes)
    app.include_router(metrics_router(registry))
    # Plain commands skip the middleware they do not need, unless a token or tracing could
    # apply; the stack is built now, so no middleware can be added after this.
    if access.any_set() or tracing_enabled():
        stack = app.build_middleware_stack()
    else:
        stack = CommandDoor(app, measured=measured, max_body_bytes=settings.max_body_bytes)
    # Outermost, so a request counts from its first step: live-feed writes wait it out.
    app.middleware_stack = CountRequests(HeadAsGet(stack), feed.requests)
    return app


def run_cart_service(settings: Settings, *, host: str, port: int, relay: bool = True) -> None:
    """Serve the cart API until SIGINT/SIGTERM; in-flight requests finish, the relay flushes."""
    app = build_cart_app(settings, relay=relay)
    log.info("event browser on http://%s:%d/ui/", host, port)
    serve(
        app, settings, name="cart service", host=host, port=port, on_exit=app.state.live_feed.close
    )
