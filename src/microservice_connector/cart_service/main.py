"""The cart service's composition root: settings in, a running HTTP server (and relay) out."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI

from microservice_connector.cart_service.application import CartService
from microservice_connector.cart_service.infrastructure.event_log import LoggingObserver
from microservice_connector.cart_service.infrastructure.http_api import create_app
from microservice_connector.cart_service.infrastructure.lineage_api import lineage_router
from microservice_connector.cart_service.infrastructure.live_feed import LiveFeed
from microservice_connector.cart_service.infrastructure.metrics import CartMetrics
from microservice_connector.cart_service.infrastructure.ui_routes import (
    UiConfig,
    live_feed_router,
    mount_ui,
)
from microservice_connector.events.codecs import codec_named
from microservice_connector.eventstore import GroupCommitStore, SqlEventStore
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.runtime.background import Background, until_stopped
from microservice_connector.runtime.broker_link import BrokerLink, open_broker_link
from microservice_connector.settings import Settings
from microservice_connector.web.guards import protect
from microservice_connector.web.health import Check
from microservice_connector.web.http_metrics import instrument
from microservice_connector.web.metrics import metrics_router, service_registry
from microservice_connector.web.server import serve

CART_TOPIC = "cart.events"
log = logging.getLogger(__name__)


def build_cart_app(settings: Settings, *, relay: bool = True) -> FastAPI:
    """Open the event store (creating its schema) and wire the API, and unless `relay` is
    False, the outbox relay to the broker (`MSC_BROKER`); raises `DatabaseUnavailable`."""
    sql_store = SqlEventStore(
        settings.cart_database_url(),
        outbox_topic=CART_TOPIC,
        sqlite_synchronous=settings.sqlite_synchronous,
        codec=codec_named(settings.serializer),
    )
    sql_store.ping()
    store = GroupCommitStore(sql_store)
    registry = service_registry("cart", settings.instance())
    metrics = CartMetrics(registry, sql_store.outbox)
    service = CartService(
        store,
        max_retries=settings.command_retries,
        observer=LoggingObserver(metrics),
        snapshots=sql_store.snapshots,
        snapshot_every=settings.snapshot_every,
    )
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
        if link is None:
            return
        background = Background()
        outbox_relay: OutboxRelay | None = None

        async def run_relay(stop: asyncio.Event) -> None:
            nonlocal outbox_relay
            publisher = await until_stopped(link.publisher(), stop)
            if publisher is None:
                return
            outbox_relay = OutboxRelay(
                sql_store.outbox,
                publisher,
                observer=metrics,
                mark_published=store.mark_published,  # on the writer thread, after a commit
                relay_id=settings.instance(),
                lease_seconds=settings.relay_lease_s,
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
    app.include_router(live_feed_router(feed))
    app.include_router(lineage_router(sql_store))
    mount_ui(app, UiConfig(billing_url=settings.billing_url))
    app.state.live_feed = feed
    instrument(app, registry)
    protect(app, token=settings.api_token_value(), max_body_bytes=settings.max_body_bytes)
    app.include_router(metrics_router(registry))
    return app


def run_cart_service(settings: Settings, *, host: str, port: int, relay: bool = True) -> None:
    """Serve the cart API until SIGINT/SIGTERM; in-flight requests finish, the relay flushes."""
    app = build_cart_app(settings, relay=relay)
    log.info("event browser on http://%s:%d/ui/", host, port)
    serve(
        app, settings, name="cart service", host=host, port=port, on_exit=app.state.live_feed.close
    )
