"""The consumer loop: fetch a batch, handle it, settle every delivery by its outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from microservice_connector.messaging.message import Delivery
from microservice_connector.messaging.ports import DeadLetters, Subscriber

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Ack:
    """Done with: acknowledge."""

    label: str = "applied"


@dataclass(frozen=True, slots=True)
class Retry:
    """Deliver again after `delay` s. A `failure` counts toward the dead-letter limit;
    waiting for an earlier event, or for the database to come back, does not."""

    delay: float
    reason: str
    failure: bool = True


@dataclass(frozen=True, slots=True)
class Reject:
    """It can never be processed: dead-letter it (with `reason`), then acknowledge."""

    reason: str


Outcome = Ack | Retry | Reject
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[list[Outcome]]]
OutcomeListener = Callable[[Delivery, Outcome], None]


class Consumer:
    """Runs a `BatchHandler` over a `Subscriber`. A delivery is acked only after the handler
    says it is done (so at-least-once), and a poison message goes to `DeadLetters` after
    `max_attempts` failures instead of stalling the stream."""

    def __init__(
        self,
        subscriber: Subscriber,
        handler: BatchHandler,
        dead_letters: DeadLetters,
        *,
        batch_size: int = 256,
        wait: float = 0.5,
        max_attempts: int = 5,
        on_outcome: OutcomeListener | None = None,
    ) -> None:
        self._subscriber = subscriber
        self._handler = handler
        self._dead_letters = dead_letters
        self._batch_size = batch_size
        self._wait = wait
        self._max_attempts = max_attempts
        self._on_outcome = on_outcome

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; the batch in hand is finished and settled first."""
        backoff = 0.0
        while not stop.is_set():
            try:
                deliveries = await self._subscriber.fetch(self._batch_size, self._wait)
            except Exception as exc:  # broker away: keep trying, never lose the loop
                backoff = min(5.0, max(0.1, backoff * 2))
                log.warning("consumer: fetch failed (%s); retrying in %.1f s", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                continue
            backoff = 0.0
            if deliveries:
                await self.process(deliveries)

    async def process(self, deliveries: Sequence[Delivery]) -> None:
        """Handle one batch and settle each delivery."""
        try:
            outcomes = await self._handler(deliveries)
        except Exception as exc:
            log.exception("consumer: handler failed on a batch of %d", len(deliveries))
            outcomes = [Retry(1.0, f"handler failed: {exc}") for _ in deliveries]
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            settled = await self._settle(delivery, outcome)
            if self._on_outcome is not None:
                self._on_outcome(delivery, settled)

    async def _settle(self, delivery: Delivery, outcome: Outcome) -> Outcome:
        try:
            if (
                isinstance(outcome, Retry)
                and outcome.failure
                and delivery.attempt >= self._max_attempts
            ):
                outcome = Reject(f"gave up after {delivery.attempt} attempts: {outcome.reason}")
            if isinstance(outcome, Ack):
                await delivery.ack()
            elif isinstance(outcome, Retry):
                await delivery.nak(outcome.delay)
            else:
                await self._dead_letter(delivery, outcome.reason)
        except Exception as exc:  # the broker will redeliver what we could not settle
            log.warning("consumer: could not settle %s: %s", delivery.message.id, exc)
        return outcome

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        try:
            await self._dead_letters.put(delivery.message, reason)
        except Exception as exc:
            log.warning(
                "consumer: dead-letter store failed for %s (%s); will retry",
                delivery.message.id,
                exc,
            )
            await delivery.nak(1.0)
            return
        log.warning("consumer: dead-lettered %s: %s", delivery.message.id, reason)
        await delivery.ack()
