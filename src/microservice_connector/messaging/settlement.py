"""What a handler says of each delivery: done, try again later, or never."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from microservice_connector.messaging.message import Delivery


@dataclass(frozen=True, slots=True)
class Ack:
    """Done with: acknowledge. `label` says how (applied, duplicate, dead-lettered…), and
    `reason` why, where there is one to log (a dead letter's error)."""

    label: str = "applied"
    reason: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Retry:
    """Deliver again after `delay` s. A `failure` counts toward the dead-letter limit;
    waiting for an earlier event, or for the database to come back, does not."""

    delay: float
    reason: str
    failure: bool = True


@dataclass(frozen=True, slots=True)
class Reject:
    """It can never be processed: the dead-letter middleware stores it, then acks it."""

    reason: str


Settlement = Ack | Retry | Reject
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[list[Settlement]]]
Middleware = Callable[[BatchHandler], BatchHandler]
