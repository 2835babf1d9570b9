"""`GET /billing/events/{event_id}` (what billing did with one cart event) and
`GET /billing/status` (consumer lag, dead letters): the billing half of the event browser.

Nothing is written for them on billing's hot path: "applied" is read from the bill (its
`last_version` and `updated_at` commit with the change), the rest from `HandlingLog`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, cast

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from microservice_connector.billing_service.infrastructure.deadletter_api import DeadLetterBox
from microservice_connector.billing_service.infrastructure.handling_log import (
    Handling,
    HandlingLog,
    Source,
)
from microservice_connector.billing_service.infrastructure.sql_repository import (
    BillStamp,
    SqlBillingRepository,
)
from microservice_connector.web.ids import ID_PATTERN, id_path
from microservice_connector.web.numbers import MAX_SQL_INT

EventId = Annotated[str, id_path("the event's id")]
OutcomeName = Literal["applied", "duplicate", "deferred", "rejected"]


class HandlingOut(BaseModel):
    """What billing did with one cart event. `outcome` is `applied` once the cart's bill has
    reached its version (durable: the version gate applies versions in order); else the latest
    outcome billing saw since it started. `applied_at` is exact when known (this process
    applied it, or it is the bill's latest version), else null; `applied_via` is known when
    this process applied it; `counts` of each outcome since billing started."""

    event_id: str
    cart_id: str
    version: int
    outcome: OutcomeName
    applied_at: datetime | None
    applied_via: Source | None = Field(
        description="where billing got it when it applied it: `broker` (the fast path), "
        "`repair` (fetched from the cart store to fill a gap) or `catch-up` (from the cart "
        "store's global feed, after the broker lost it); null when not known"
    )
    last_seen_at: datetime | None
    counts: dict[str, int]
    last_error: str | None


class StatusOut(BaseModel):
    """How billing keeps up: its consumer's lag and the dead letters waiting; None where
    the broker could not tell (with the reason in `problems`)."""

    consumer_lag: int | None
    dead_letters: int | None
    problems: list[str]


class LagReading:
    """The consumer's lag as last measured; None until the first measurement."""

    def __init__(self) -> None:
        self.value: int | None = None

    def get(self) -> int | None:
        """The last measured lag."""
        return self.value


def handling_router(
    repository: SqlBillingRepository,
    handled: HandlingLog,
    box: DeadLetterBox,
    lag: Callable[[], int | None],
) -> APIRouter:
    """The routes; `lag` returns the consumer's last measured lag (None before the first)."""
    router = APIRouter(tags=["event browser"])

    @router.get("/billing/events/{event_id}", response_model=HandlingOut)
    async def handling(
        event_id: EventId,
        cart_id: Annotated[str | None, Query(pattern=ID_PATTERN, description="its cart")] = None,
        version: Annotated[
            int | None, Query(ge=1, le=MAX_SQL_INT, description="its version")
        ] = None,
    ) -> HandlingOut:
        """What billing did with the event; give `cart_id` and `version` (the lineage view
        does) to learn from the bill whether it is applied even after billing restarted.
        404 while billing knows nothing of it."""
        seen = handled.get(event_id)
        cart = cart_id or (seen.cart_id if seen else None)
        stamp = await asyncio.to_thread(repository.stamp, cart) if cart else None
        found = _handling(event_id, seen, stamp, version or (seen.version if seen else None))
        if found is None:
            raise HTTPException(404, f"billing has not handled event {event_id} (yet)")
        return found

    @router.get("/billing/status", response_model=StatusOut)
    async def status() -> StatusOut:
        """Consumer lag (refreshed every few seconds) and the dead-letter count."""
        problems: list[str] = []
        dead_letters: int | None = None
        try:
            dead_letters = await box.count()
        except HTTPException as exc:
            problems.append(str(exc.detail))
        consumer_lag = lag()
        if consumer_lag is None:
            problems.append("consumer lag not measured yet (is the broker up?)")
        return StatusOut(consumer_lag=consumer_lag, dead_letters=dead_letters, problems=problems)

    return router


def _handling(
    event_id: str, seen: Handling | None, stamp: BillStamp | None, version: int | None
) -> HandlingOut | None:
    """What is known of the event from the bill (`stamp`) and the log (`seen`), or None."""
    applied = stamp is not None and version is not None and stamp.last_version >= version
    if seen is None and not applied:
        return None
    assert version is not None
    applied_at = seen.applied_at if seen else None
    if applied and applied_at is None and stamp is not None and stamp.last_version == version:
        applied_at = stamp.updated_at  # the latest version: the bill changed when it applied
    return HandlingOut(
        event_id=event_id,
        cart_id=seen.cart_id if seen else stamp.cart_id if stamp else "",
        version=version,
        outcome="applied" if applied else cast(OutcomeName, seen.last_outcome if seen else ""),
        applied_at=applied_at,
        applied_via=seen.applied_via if seen else None,
        last_seen_at=seen.last_at if seen else None,
        counts=seen.counts if seen else {},
        last_error=seen.last_error if seen else None,
    )
