"""`GET /billing/events/{event_id}` (what billing did with one cart event) and
`GET /billing/status` (consumer lag, dead letters): the billing half of the event browser."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, cast

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from microservice_connector.billing_service.infrastructure.deadletter_api import DeadLetterBox
from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.web.ids import id_path

EventId = Annotated[str, id_path("the event's id")]
Outcome = Literal["applied", "duplicate", "deferred", "rejected"]


class HandlingOut(BaseModel):
    """What billing did with one cart event: `applied` (durable, with `applied_at`), or
    else its latest outcome since billing started; `counts` of the non-applied outcomes."""

    event_id: str
    cart_id: str
    version: int
    outcome: Outcome
    applied_at: datetime | None
    last_seen_at: datetime
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
    log: HandlingLog,
    box: DeadLetterBox,
    lag: Callable[[], int | None],
) -> APIRouter:
    """The routes; `lag` returns the consumer's last measured lag (None before the first)."""
    router = APIRouter(tags=["event browser"])

    @router.get("/billing/events/{event_id}", response_model=HandlingOut)
    async def handling(event_id: EventId) -> HandlingOut:
        """What billing did with the event; 404 while it has not seen it."""
        applied = await asyncio.to_thread(repository.applied, event_id)
        seen = log.get(event_id)
        if applied is None and seen is None:
            raise HTTPException(404, f"billing has not handled event {event_id} (yet)")
        if applied is not None:
            return HandlingOut(
                event_id=event_id,
                cart_id=applied.cart_id,
                version=applied.version,
                outcome="applied",
                applied_at=applied.applied_at,
                last_seen_at=max(applied.applied_at, seen.last_at) if seen else applied.applied_at,
                counts=seen.counts if seen else {},
                last_error=seen.last_error if seen else None,
            )
        assert seen is not None
        return HandlingOut(
            event_id=event_id,
            cart_id=seen.cart_id,
            version=seen.version,
            outcome=cast(Outcome, seen.last_outcome),
            applied_at=None,
            last_seen_at=seen.last_at,
            counts=seen.counts,
            last_error=seen.last_error,
        )

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
