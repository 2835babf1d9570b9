"""The cart service's composition root: settings in, a running HTTP server out."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY

from microservice_connector.cart_service.application import CartService
from microservice_connector.cart_service.infrastructure.http_api import create_app
from microservice_connector.eventstore import GroupCommitStore, SqlEventStore
from microservice_connector.settings import Settings
from microservice_connector.web.metrics import metrics_router

CART_TOPIC = "cart.events"


def build_cart_app(settings: Settings) -> FastAPI:
    """Open the event store (creating its schema) and wire the API; raises `DatabaseUnavailable`."""
    sql_store = SqlEventStore(
        settings.cart_database_url(),
        outbox_topic=CART_TOPIC,
        sqlite_synchronous=settings.sqlite_synchronous,
    )
    sql_store.ping()
    store = GroupCommitStore(sql_store)
    service = CartService(store, max_retries=settings.command_retries)
    app = create_app(service, checks={"database": store.ping}, on_shutdown=store.close)
    app.include_router(metrics_router(REGISTRY))
    return app


def run_cart_service(settings: Settings, *, host: str, port: int) -> None:
    """Serve the cart API until SIGINT/SIGTERM; in-flight requests finish first."""
    app = build_cart_app(settings)
    logging.getLogger(__name__).info("cart service on http://%s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
