"""`GET /deadletters` and `POST /deadletters/{sequence}/replay`: the messages billing gave up
on, for the event browser (the same store `msc deadletter` reads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel

from microservice_connector.messaging.ports import DeadLetter, DeadLetters, Publisher

BROKER_WAIT_S = 3.0
COUNT_LIMIT = 1000
COUNT_FRESH_S = 2.0
PAYLOAD_CHARS = 2000
T = TypeVar("T")


class DeadLetterOut(BaseModel):
    """One dead letter: which event, why it failed, and when."""

    sequence: int
    message_id: str
    topic: str
    event_id: str | None
    event_type: str | None
    cart_id: str | None
    version: str | None
    error: str
    failed_at: str
    payload: str

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterOut:
        """The API shape of a dead letter; the payload as text, cut at `PAYLOAD_CHARS`."""
        headers = letter.message.headers
        return cls(
            sequence=letter.sequence,
            message_id=letter.message.id,
            topic=letter.message.topic,
            event_id=headers.get("event-id"),
            event_type=headers.get("event-type"),
            cart_id=headers.get("aggregate-id"),
            version=headers.get("aggregate-version"),
            error=letter.error,
            failed_at=letter.failed_at,
            payload=letter.message.payload.decode("utf-8", errors="replace")[:PAYLOAD_CHARS],
        )


class ReplayOut(BaseModel):
    """A replayed dead letter: published again under `message_id`, then removed."""

    sequence: int
    message_id: str
    broker_sequence: int | None


class DeadLetterBox:
    """The dead-letter store and a publisher, reached once the broker link is up; a broker
    that is not reachable within `BROKER_WAIT_S` answers 503 instead of hanging."""

    def __init__(
        self,
        dead_letters: Callable[[], Awaitable[DeadLetters]],
        publisher: Callable[[], Awaitable[Publisher]],
    ) -> None:
        self._dead_letters = dead_letters
        self._publisher = publisher
        self._count: tuple[float, int] | None = None

    async def list(self, limit: int) -> list[DeadLetter]:
        """The oldest `limit` dead letters."""
        store = await _reach(self._dead_letters())
        return await _reach(store.list(limit))

    async def count(self) -> int:
        """How many dead letters there are (up to `COUNT_LIMIT`), read at most every
        `COUNT_FRESH_S` seconds however often it is asked."""
        now = time.monotonic()
        if self._count is None or now - self._count[0] > COUNT_FRESH_S:
            self._count = (now, len(await self.list(COUNT_LIMIT)))
        return self._count[1]

    async def replay(self, sequence: int) -> ReplayOut:
        """Publish dead letter `sequence` again to its topic and remove it; 404 if none."""
        store = await _reach(self._dead_letters())
        publisher = await _reach(self._publisher())
        try:
            result = await _reach(store.replay(sequence, publisher))
        except KeyError:
            raise HTTPException(404, f"no dead letter with sequence {sequence}") from None
        if not result.acknowledged:
            raise HTTPException(503, f"the broker did not take the replay: {result.error}")
        self._count = None
        return ReplayOut(
            sequence=sequence, message_id=result.message_id, broker_sequence=result.sequence
        )


async def _reach(step: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(step, BROKER_WAIT_S)
    except TimeoutError:
        raise HTTPException(503, "the broker is not reachable; try again shortly") from None
    except ConnectionError as exc:  # BrokerUnavailable and its kind
        raise HTTPException(503, f"the broker is not reachable: {exc}") from None


def deadletter_router(box: DeadLetterBox) -> APIRouter:
    """The dead-letter routes; replay is a POST, so `MSC_API_TOKEN` guards it when set."""
    router = APIRouter(tags=["dead letters"])

    @router.get("/deadletters", response_model=list[DeadLetterOut])
    async def list_dead_letters(
        limit: Annotated[int, Query(ge=1, le=COUNT_LIMIT)] = 100,
    ) -> list[DeadLetterOut]:
        """The oldest dead letters, with their error."""
        return [DeadLetterOut.of(letter) for letter in await box.list(limit)]

    @router.post("/deadletters/{sequence}/replay", response_model=ReplayOut)
    async def replay_dead_letter(
        sequence: Annotated[int, Path(ge=1, le=2**63 - 1, description="the dead letter's seq")],
    ) -> ReplayOut:
        """Publish the dead letter again to its original topic; it is removed once acked."""
        return await box.replay(sequence)

    return router
