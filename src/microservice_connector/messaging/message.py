"""What travels: a `Message` of id, headers and payload bytes; a `Delivery` to settle it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Message:
    """An immutable message: `id` (the event id, used for broker-side dedupe), headers, bytes."""

    id: str
    topic: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The broker's answer for one message: acknowledged (with its sequence) or the error.
    `refused` errors are the message's own (over the broker's size limit, a header name it
    cannot carry): sent again as it is, it is refused again, whatever happens to the
    messages around it."""

    message_id: str
    sequence: int | None = None
    duplicate: bool = False
    error: str | None = None
    refused: bool = False

    @property
    def acknowledged(self) -> bool:
        """Whether the broker has durably stored the message."""
        return self.error is None


Settle = Callable[[], Awaitable[None]]
Redeliver = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Delivery:
    """One delivery of a message. Settle it exactly once: `ack()`, or `nak(delay)` to get it
    again later. `attempt` counts deliveries of this message, starting at 1."""

    message: Message
    attempt: int
    sequence: int
    _ack: Settle
    _nak: Redeliver
    settled: bool = False

    async def ack(self) -> None:
        """The message is done with; it will not be delivered again (at-least-once otherwise)."""
        if not self.settled:
            self.settled = True
            await self._ack()

    async def nak(self, delay: float = 0.0) -> None:
        """Deliver the message again after `delay` seconds, with `attempt` one higher."""
        if not self.settled:
            self.settled = True
            await self._nak(delay)
