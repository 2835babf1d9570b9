"""`GET /asyncapi.json`: the event contract (AsyncAPI 3.0) next to the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from microservice_connector.events.asyncapi import asyncapi_document


def asyncapi_router() -> APIRouter:
    """A router serving the AsyncAPI document, generated once from the event registries."""
    router = APIRouter(tags=["contract"])
    document: dict[str, Any] = asyncapi_document()

    @router.get("/asyncapi.json", response_class=JSONResponse)
    async def asyncapi() -> JSONResponse:
        """The messages on `cart.events`, `billing.events` and `deadletter.cart.events`:
        their headers and every event's payload schema in each schema version."""
        return JSONResponse(document)

    return router
