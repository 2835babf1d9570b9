"""The messaging port (Watermill-shaped): `Message`, `Publisher`, `Subscriber`, and adapters."""

from __future__ import annotations

from microservice_connector.messaging.message import Delivery, Message, PublishResult
from microservice_connector.messaging.ports import (
    DeadLetter,
    DeadLetters,
    Features,
    Publisher,
    Subscriber,
)

__all__ = [
    "DeadLetter",
    "DeadLetters",
    "Delivery",
    "Features",
    "Message",
    "PublishResult",
    "Publisher",
    "Subscriber",
]
