"""An early cart event (its predecessor not yet applied) comes back, sooner at first and
later as it keeps waiting, and is dead-lettered only once its wait budget is spent: long
enough to outlast the consumer's ack wait for a predecessor held by a billing that died."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    DEFAULT_GAP_WAIT_S,
    CartEventHandler,
    gap_attempts,
    gap_delay,
)
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.registry import default_registry
from microservice_connector.messaging.consumer import Reject, Retry
from microservice_connector.messaging.message import Delivery, Message
from microservice_connector.settings import Settings

ACK_WAIT_S = 30.0


def test_early_waits_start_short_and_grow_to_a_cap() -> None:
    delays = [gap_delay(attempt) for attempt in range(1, 40)]
    assert delays[0] == pytest.approx(0.2)
    assert delays == sorted(delays)
    assert max(delays) == pytest.approx(5.0)


def test_the_default_budget_outlasts_several_ack_waits() -> None:
    attempts = gap_attempts(DEFAULT_GAP_WAIT_S)
    waited = sum(gap_delay(attempt) for attempt in range(1, attempts))
    assert waited >= 4 * ACK_WAIT_S
    assert waited < DEFAULT_GAP_WAIT_S + 5.0


def test_an_early_event_is_retried_until_its_budget_then_dead_lettered(tmp_path: Path) -> None:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    handler = CartEventHandler(BillingLedger(repository), default_registry(), gap_wait_s=10.0)
    last = gap_attempts(10.0)
    try:
        early = asyncio.run(handler([_version_two(attempt=1)]))
        later = asyncio.run(handler([_version_two(attempt=last - 1)]))
        spent = asyncio.run(handler([_version_two(attempt=last)]))
    finally:
        repository.close()
    assert isinstance(early[0], Retry)
    assert not early[0].failure
    assert isinstance(later[0], Retry)
    assert later[0].delay > early[0].delay
    assert isinstance(spent[0], Reject)
    assert "waited" in spent[0].reason


def _version_two(attempt: int) -> Delivery:
    async def settle(*_: object) -> None:
        return None

    payload = (
        b'{"cart_id":"c-1","item_id":"item-001","quantity":1,"timestamp":"2026-11-25T00:00:00Z"}'
    )
    headers = {
        "event-id": "ev-2",
        "event-type": "ItemAdded",
        "aggregate-id": "c-1",
        "aggregate-version": "2",
    }
    message = Message(id="ev-2", topic="cart.events", payload=payload, headers=headers)
    return Delivery(message, attempt, 2, settle, settle)
