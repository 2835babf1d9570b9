"""Middlewares and the consumer loop, on fake deliveries and an in-memory dead-letter store."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from microservice_connector.messaging.consumer import Consumer
from microservice_connector.messaging.message import Delivery, Message, PublishResult
from microservice_connector.messaging.middleware import (
    chain,
    dead_letter,
    recover,
    retry_with_backoff,
)
from microservice_connector.messaging.ports import DeadLetter, Publisher
from microservice_connector.messaging.settlement import Ack, Reject, Retry, Settlement


class Settled:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, float]] = []


def delivery(settled: Settled, message_id: str, attempt: int = 1) -> Delivery:
    async def ack() -> None:
        settled.log.append(("ack", message_id, 0.0))

    async def nak(delay: float) -> None:
        settled.log.append(("nak", message_id, delay))

    return Delivery(Message(message_id, "t", b"x"), attempt, 1, ack, nak)


class Letters:
    def __init__(self, fail: bool = False) -> None:
        self.kept: list[tuple[str, str]] = []
        self.fail = fail

    async def put(self, message: Message, error: str) -> None:
        if self.fail:
            raise ConnectionError("down")
        self.kept.append((message.id, error))

    async def list(self, limit: int = 100) -> list[DeadLetter]:
        return []

    async def replay(self, sequence: int, publisher: Publisher) -> PublishResult:
        raise NotImplementedError


def answering(*outcomes: Settlement):  # type: ignore[no-untyped-def]
    async def handler(deliveries: Sequence[Delivery]) -> list[Settlement]:
        return list(outcomes)

    return handler


async def test_acks_naks_and_dead_letters_by_outcome() -> None:
    settled, letters = Settled(), Letters()
    handler = chain(
        answering(Ack(), Retry(0.2, "early", failure=False), Reject("poison"), Retry(0, "boom")),
        dead_letter(letters, max_attempts=3),
        retry_with_backoff(base=0.1),
    )
    batch = [
        delivery(settled, "a"),
        delivery(settled, "b"),
        delivery(settled, "c"),
        delivery(settled, "d", 2),
    ]
    await Consumer(_NoSubscriber(), handler).process(batch)
    assert settled.log == [
        ("ack", "a", 0.0),
        ("nak", "b", 0.2),
        ("ack", "c", 0.0),
        ("nak", "d", 0.2),
    ]
    assert letters.kept == [("c", "poison")]


async def test_a_failure_on_its_last_attempt_is_dead_lettered() -> None:
    settled, letters = Settled(), Letters()
    handler = chain(answering(Retry(0, "boom")), dead_letter(letters, max_attempts=3))
    await Consumer(_NoSubscriber(), handler).process([delivery(settled, "a", attempt=3)])
    assert settled.log == [("ack", "a", 0.0)]
    assert letters.kept == [("a", "gave up after 3 attempts: boom")]


async def test_when_the_dead_letter_store_fails_the_message_is_kept() -> None:
    settled = Settled()
    handler = chain(answering(Reject("poison")), dead_letter(Letters(fail=True)))
    await Consumer(_NoSubscriber(), handler).process([delivery(settled, "a")])
    assert settled.log == [("nak", "a", 1.0)]


async def test_a_handler_that_raises_is_retried_not_fatal() -> None:
    async def broken(deliveries: Sequence[Delivery]) -> list[Settlement]:
        raise RuntimeError("bug")

    settled = Settled()
    await Consumer(_NoSubscriber(), recover(broken)).process([delivery(settled, "a")])
    assert settled.log == [("nak", "a", 1.0)]


class _NoSubscriber:
    async def fetch(self, max_messages: int, wait: float) -> list[Delivery]:
        return []

    async def close(self) -> None:
        return None


async def test_a_dead_letters_log_line_says_why(caplog: pytest.LogCaptureFixture) -> None:
    from microservice_connector.messaging.middleware import log_outcomes

    settled, letters = Settled(), Letters()
    handler = chain(
        answering(Reject("header aggregate-version 'abc' is no number"), Ack()),
        log_outcomes(),
        dead_letter(letters),
    )
    with caplog.at_level(logging.INFO, logger="microservice_connector.consumer"):
        await Consumer(_NoSubscriber(), handler).process(
            [delivery(settled, "a"), delivery(settled, "b")]
        )
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        "dead-lettered (header aggregate-version 'abc' is no number) event_id=a"
    )
    assert [r.getMessage().split()[0] for r in caplog.records] == ["dead-lettered", "applied"]
