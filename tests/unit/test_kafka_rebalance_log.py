"""A Kafka subscriber says what each rebalance gives it, and says so when it gives it nothing
(more members than partitions: that member idles until the next rebalance)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import TopicPartition

from microservice_connector.messaging.kafka.subscriber import _Rebalance


def test_each_assignment_is_logged_and_an_empty_one_is_named_as_such(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = _Rebalance(subscriber=None)  # type: ignore[arg-type]
    assigned = [TopicPartition("cart.events", 2), TopicPartition("cart.events", 0)]

    with caplog.at_level(logging.INFO, logger="microservice_connector.messaging.kafka"):
        asyncio.run(listener.on_partitions_assigned(assigned))
        asyncio.run(listener.on_partitions_assigned([]))

    assert "assigns this member partitions cart.events[0, 2]" in caplog.text
    assert "assigns this member no partition" in caplog.text
