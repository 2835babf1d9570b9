"""JetStream publishes through `NatsPublisher`: each answer read off the publisher's own reply
subject, in order, with the broker's refusals named; the same with nats-py's callback task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from microservice_connector.messaging.message import Message
from microservice_connector.messaging.nats import NatsPublisher, ensure_stream
from microservice_connector.messaging.nats import acks as ack_inbox
from support.nats import NatsServer


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    connection = await nats.connect(nats_server.url)
    await ensure_stream(connection.jetstream(), "CART", ["cart.events"])
    yield connection
    await connection.close()


async def _until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not reconnected in time"
        await asyncio.sleep(0.05)


def _messages(count: int, topic: str = "cart.events") -> list[Message]:
    return [Message(f"event-{n}", topic, f"{n}".encode(), {}) for n in range(count)]


@pytest.mark.parametrize("in_reader", [True, False], ids=["settled-in-reader", "callback-task"])
async def test_a_batch_is_acknowledged_in_order_and_a_repeat_as_duplicates(
    client: Client, in_reader: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not in_reader:
        monkeypatch.setattr(ack_inbox, "settles_in_reader", lambda _subscription: False)
    publisher = NatsPublisher(client.jetstream(), ack_timeout=2.0)
    messages = _messages(300)

    first = await publisher.publish(messages)
    again = await publisher.publish(messages[:10])

    assert [result.message_id for result in first] == [m.id for m in messages]
    assert [result.sequence for result in first] == list(range(1, 301))
    assert all(result.acknowledged and not result.duplicate for result in first)
    assert [(r.sequence, r.duplicate) for r in again] == [(n, True) for n in range(1, 11)]
    stored = await client.jetstream().stream_info("CART")
    assert stored.state.messages == 300
    await publisher.close()


async def test_a_subject_no_stream_holds_and_a_refusal_are_errors_that_name_them(
    client: Client,
) -> None:
    publisher = NatsPublisher(client.jetstream(), ack_timeout=2.0)
    nowhere = Message("event-x", "nobody.listens", b"{}", {})
    refused = Message("event-y", "cart.events", b"{}", {"Nats-Expected-Stream": "OTHER"})
    fine = _messages(1)[0]

    results = await publisher.publish([nowhere, refused, fine])

    assert results[0].error == "no stream holds subject 'nobody.listens'"
    assert (results[1].error or "").startswith("JetStream refused it:")
    assert (results[2].acknowledged, results[2].sequence) == (True, 1)


async def test_a_closed_publisher_refuses_and_a_batch_after_a_timeout_is_answered_anew(
    client: Client, nats_server: NatsServer
) -> None:
    # Room for a just-restarted JetStream to answer on a busy machine.
    publisher = NatsPublisher(client.jetstream(), ack_timeout=2.0)
    nats_server.stop()
    lost = await publisher.publish(_messages(3))
    nats_server.start()
    await _until(lambda: client.is_connected)

    later = await publisher.publish(_messages(5))
    await publisher.close()
    closed = await publisher.publish(_messages(1))

    assert not any(result.acknowledged for result in lost)
    assert all(result.acknowledged for result in later)
    assert closed[0].error == "the publisher is closed"


async def test_batches_published_at_once_from_a_new_publisher_share_one_reply_subject(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    subscribe = client.subscribe

    async def subscribe_slowly(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.01)  # as a subscribe that waits for its flush would
        return await subscribe(*args, **kwargs)

    monkeypatch.setattr(client, "subscribe", subscribe_slowly)
    publisher = NatsPublisher(client.jetstream(), ack_timeout=2.0)
    batches = [_messages(50)[n * 10 : n * 10 + 10] for n in range(5)]
    before = _inboxes(client)

    results = await asyncio.gather(*(publisher.publish(batch) for batch in batches))

    assert all(r.acknowledged for batch in results for r in batch)
    assert sorted(r.sequence or 0 for batch in results for r in batch) == list(range(1, 51))
    assert _inboxes(client) == before + 1


def _inboxes(client: Client) -> int:
    return sum(1 for s in client._subs.values() if s.subject.startswith("_INBOX."))


async def test_publishers_on_one_connection_share_its_reply_subject(client: Client) -> None:
    before = _inboxes(client)

    for n in range(20):
        publisher = NatsPublisher(client.jetstream(), ack_timeout=2.0)
        [result] = await publisher.publish([Message(f"event-{n}", "cart.events", b"{}", {})])
        assert result.acknowledged

    assert _inboxes(client) == before + 1


async def test_a_publisher_on_a_closed_connection_answers_each_message_with_why(
    nats_server: NatsServer,
) -> None:
    connection = await nats.connect(nats_server.url)
    await connection.close()
    publisher = NatsPublisher(connection.jetstream(), ack_timeout=0.5)

    results = await publisher.publish(_messages(3))

    assert [result.error for result in results] == ["disconnected from NATS"] * 3


async def test_an_answer_to_a_publish_given_up_on_is_ignored() -> None:
    batch = ack_inbox.AckBatch("_INBOX.test.", 0, 2)
    answer = Msg(None, subject="_INBOX.test.0", data=b'{"stream": "CART", "seq": 1}')

    batch.give_up(0)
    batch.settle(0, answer)

    assert batch.answers == [None, None]
    with pytest.raises(TimeoutError):  # it still waits for the second
        await asyncio.wait_for(batch.answered(within=5.0), 0.05)
    batch.settle(1, answer)
    await batch.answered(within=1.0)
    assert batch.answers == [None, answer]


async def test_a_message_over_the_brokers_max_payload_fails_alone_and_the_connection_stays(
    client: Client,
) -> None:
    # nats-py checks the payload alone; the server counts the headers too and would close the
    # connection on the whole message, cutting every later publish off.
    publisher = NatsPublisher(client.jetstream(), ack_timeout=2.0)
    headers = {"event-type": "InvoiceIssued", "trace": "t" * 200}
    over = Message("too-big", "cart.events", b"x" * (client.max_payload - 100), headers)
    fits = Message("fits", "cart.events", b"x" * (client.max_payload - 400), headers)
    before, after = _messages(2)

    results = await publisher.publish([before, over, fits, after])

    assert [r.acknowledged for r in results] == [True, False, True, True]
    assert [r.refused for r in results] == [False, True, False, False]
    assert f"over the broker's max_payload of {client.max_payload}" in (results[1].error or "")
    assert client.is_connected
    assert (await publisher.publish(_messages(3)[2:]))[0].acknowledged


async def test_a_message_with_a_header_name_nats_refuses_fails_alone(client: Client) -> None:
    publisher = NatsPublisher(client.jetstream(), ack_timeout=2.0)
    before, after = _messages(2)
    bad = Message("bad-header", "cart.events", b"{}", {"not a token": "x"})

    results = await publisher.publish([before, bad, after])

    assert [r.acknowledged for r in results] == [True, False, True]
    assert results[1].refused
    assert "is not an HTTP token" in (results[1].error or "")
    assert client.is_connected


async def test_a_message_over_the_streams_max_msg_size_is_refused_alone(client: Client) -> None:
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="SMALL", subjects=["small.>"], max_msg_size=100))
    publisher = NatsPublisher(js, ack_timeout=2.0)
    fits, big = Message("fits", "small.x", b"x" * 10, {}), Message("big", "small.x", b"x" * 300, {})

    results = await publisher.publish([fits, big])

    assert [r.acknowledged for r in results] == [True, False]
    assert [r.refused for r in results] == [False, True]
    assert "message size exceeds maximum allowed" in (results[1].error or "")
