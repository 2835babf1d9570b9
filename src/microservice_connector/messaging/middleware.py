"""Middlewares: each wraps a batch handler and returns one (Watermill's shape, batched)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import reduce

from microservice_connector.messaging.message import Delivery
from microservice_connector.messaging.ports import DeadLetters, put_dead_letter
from microservice_connector.messaging.settlement import (
    Ack,
    BatchHandler,
    Middleware,
    Reject,
    Retry,
    Settlement,
)

log = logging.getLogger("microservice_connector.consumer")


def chain(handler: BatchHandler, *middlewares: Middleware) -> BatchHandler:
    """`handler` wrapped by `middlewares`, the first one outermost."""
    return reduce(lambda inner, wrap: wrap(inner), reversed(middlewares), handler)


def recover(handler: BatchHandler) -> BatchHandler:
    """A handler that raises answers `Retry` for the whole batch instead of crashing the loop."""

    async def wrapped(deliveries: Sequence[Delivery]) -> list[Settlement]:
        try:
            return await handler(deliveries)
        except Exception as exc:
            log.exception("handler failed on a batch of %d", len(deliveries))
            return [Retry(1.0, f"handler failed: {exc}") for _ in deliveries]

    return wrapped


def retry_with_backoff(base: float = 0.1, cap: float = 10.0) -> Middleware:
    """Failures come back after an exponential backoff by attempt: base, 2·base, … ≤ cap."""

    def middleware(handler: BatchHandler) -> BatchHandler:
        async def wrapped(deliveries: Sequence[Delivery]) -> list[Settlement]:
            outcomes = await handler(deliveries)
            return [
                Retry(max(o.delay, min(cap, base * 2 ** (d.attempt - 1))), o.reason, o.failure)
                if isinstance(o, Retry) and o.failure
                else o
                for d, o in zip(deliveries, outcomes, strict=True)
            ]

        return wrapped

    return middleware


def dead_letter(dead_letters: DeadLetters, max_attempts: int = 5) -> Middleware:
    """Rejected messages, and failures on their `max_attempts`-th delivery, go to
    `dead_letters` and are acked; if the dead-letter store fails they are retried instead."""

    def middleware(handler: BatchHandler) -> BatchHandler:
        async def wrapped(deliveries: Sequence[Delivery]) -> list[Settlement]:
            outcomes = await handler(deliveries)
            settled: list[Settlement] = []
            for delivery, outcome in zip(deliveries, outcomes, strict=True):
                if (
                    isinstance(outcome, Retry)
                    and outcome.failure
                    and delivery.attempt >= max_attempts
                ):
                    outcome = Reject(f"gave up after {delivery.attempt} attempts: {outcome.reason}")
                if isinstance(outcome, Reject):
                    outcome = await _store(dead_letters, delivery, outcome.reason)
                settled.append(outcome)
            return settled

        return wrapped

    return middleware


async def _store(dead_letters: DeadLetters, delivery: Delivery, reason: str) -> Settlement:
    """Dead-letter the delivery (without its payload if the store will not take it whole:
    else it would be retried for good, holding its partition back); Retry if that fails."""
    try:
        reason = await put_dead_letter(dead_letters, delivery.message, reason)
    except Exception as exc:
        return Retry(1.0, f"dead-letter store failed: {exc}", failure=False)
    return Ack("dead-lettered", reason)


def log_outcomes(level_of: Callable[[Settlement], int] | None = None) -> Middleware:
    """Log each outcome with the event id, cart and correlation id, so a command can be
    followed from HTTP to invoice."""

    def default_level(outcome: Settlement) -> int:
        if isinstance(outcome, Ack):
            return {"dead-lettered": logging.WARNING, "applied": logging.INFO}.get(
                outcome.label, logging.DEBUG
            )
        return logging.INFO

    level = level_of or default_level

    def middleware(handler: BatchHandler) -> BatchHandler:
        async def wrapped(deliveries: Sequence[Delivery]) -> list[Settlement]:
            outcomes = await handler(deliveries)
            for delivery, outcome in zip(deliveries, outcomes, strict=True):
                lvl = level(outcome)
                if log.isEnabledFor(lvl):
                    headers = delivery.message.headers
                    ids = {
                        "event_id": headers.get("event-id", delivery.message.id),
                        "aggregate_id": headers.get("aggregate-id", "?"),
                        "correlation_id": headers.get("correlation-id") or "-",
                        "version": headers.get("aggregate-version", "?"),
                        "outcome": _describe(outcome),
                    }
                    log.log(
                        lvl,
                        "%(outcome)s event_id=%(event_id)s aggregate_id=%(aggregate_id)s "
                        "version=%(version)s correlation_id=%(correlation_id)s",
                        ids,
                        extra=ids,
                    )
            return outcomes

        return wrapped

    return middleware


def _describe(outcome: Settlement) -> str:
    if isinstance(outcome, Ack):
        return outcome.label if outcome.reason is None else f"{outcome.label} ({outcome.reason})"
    if isinstance(outcome, Retry):
        return f"retry in {outcome.delay:.2f}s ({outcome.reason})"
    return f"rejected ({outcome.reason})"
