"""The consumer loop: fetch a batch, run the handler, settle each delivery by its outcome."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from microservice_connector.messaging.message import Delivery
from microservice_connector.messaging.ports import Subscriber
from microservice_connector.messaging.settlement import Ack, BatchHandler, Reject, Retry, Settlement

log = logging.getLogger(__name__)

__all__ = ["Ack", "Consumer", "Reject", "Retry", "Settlement"]

SettlementListener = Callable[[Delivery, Settlement], None]


class Consumer:
    """Runs a handler (usually wrapped in middlewares) over a `Subscriber`. A delivery is
    acked only once the handler says `Ack`, so delivery is at least once; `Retry` naks it
    with the delay; a `Reject` that no middleware took care of is retried, never dropped."""

    def __init__(
        self,
        subscriber: Subscriber,
        handler: BatchHandler,
        *,
        batch_size: int = 256,
        wait: float = 0.5,
        on_outcome: SettlementListener | None = None,
    ) -> None:
        self._subscriber = subscriber
        self._handler = handler
        self._batch_size = batch_size
        self._wait = wait
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
        outcomes = await self._handler(deliveries)
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            try:
                if isinstance(outcome, Ack):
                    await delivery.ack()
                elif isinstance(outcome, Retry):
                    await delivery.nak(outcome.delay)
                else:
                    log.warning(
                        "consumer: unhandled rejection of %s: %s",
                        delivery.message.id,
                        outcome.reason,
                    )
                    await delivery.nak(1.0)
            except Exception as exc:  # the broker redelivers what we could not settle
                log.warning("consumer: could not settle %s: %s", delivery.message.id, exc)
            if self._on_outcome is not None:
                self._on_outcome(delivery, outcome)
