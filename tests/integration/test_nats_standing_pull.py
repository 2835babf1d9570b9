"""Billing's NATS subscriber keeps a pull request open: a message published while the
consumer is busy is delivered before it asks, what was delivered and not fetched is given
back when it closes, and a request that expired is renewed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import nats
from nats.js import JetStreamContext

from microservice_connector.messaging.nats import NatsSubscriber, ensure_stream
from support.nats import NatsServer

DEADLINE_S = 10.0


@asynccontextmanager
async def jetstream(server: NatsServer) -> AsyncIterator[JetStreamContext]:
    client = await nats.connect(server.url)
    try:
        js = client.jetstream()
        await ensure_stream(js, "CART", ["cart.events"])
        yield js
    finally:
        await client.close()


async def subscriber(js: JetStreamContext) -> NatsSubscriber:
    return await NatsSubscriber.create(
        js, stream="CART", subject="cart.events", durable="billing", ack_wait=30.0
    )


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def delivered_unacked(js: JetStreamContext, count: int) -> bool:
    """The broker sent `count` messages to the consumer, none left to send, none acked."""
    info = await js.consumer_info("CART", "billing")
    return info.num_ack_pending == count and info.num_pending == 0


async def sent_before_asked(js: JetStreamContext, consumer: NatsSubscriber) -> None:
    """Open the consumer's standing request with a fetch that finds nothing, publish "one",
    and wait until the broker sent it on that request, while no fetch runs."""
    assert await consumer.fetch(10, wait=0.05) == []
    await js.publish("cart.events", b"1", headers={"Nats-Msg-Id": "one"})
    await until(lambda: delivered_unacked(js, 1), "the message sent before a fetch")


async def acked_at_once(
    js: JetStreamContext, consumer: NatsSubscriber, message_id: str, wait: float
) -> None:
    """Publish `message_id` and fetch it (and ack it) with a fetch of up to 10 that waits
    `wait` s: answered at once, it leaves its request open for the rest."""
    await js.publish("cart.events", b"0", headers={"Nats-Msg-Id": message_id})
    [delivery] = await consumer.fetch(10, wait=wait)
    assert delivery.message.id == message_id
    await delivery.ack()


async def fetched_one(consumer: NatsSubscriber, wait: float) -> float:
    """Fetch "one" (and ack it), then close the consumer; the seconds the fetch took."""
    started = time.monotonic()
    [delivery] = await consumer.fetch(10, wait=wait)
    took = time.monotonic() - started
    assert delivery.message.id == "one"
    await delivery.ack()
    await consumer.close()
    return took


async def test_a_message_published_between_fetches_is_delivered_before_it_is_asked_for(
    nats_server: NatsServer,
) -> None:
    async with jetstream(nats_server) as js:
        consumer = await subscriber(js)
        await sent_before_asked(js, consumer)

        assert await fetched_one(consumer, wait=5.0) < 1.0  # in hand, not waited for


async def test_what_arrived_and_was_not_fetched_is_given_back_on_close(
    nats_server: NatsServer,
) -> None:
    async with jetstream(nats_server) as js:
        first = await subscriber(js)
        await sent_before_asked(js, first)
        await first.close()

        # Given back, it goes to the next consumer now, not after the 30 s ack wait.
        second = await subscriber(js)
        assert await fetched_one(second, wait=DEADLINE_S) < DEADLINE_S / 2


def delivered_while_this_loop_waits(server: NatsServer, message_id: str) -> None:
    """Publish `message_id` from a client of its own, on an event loop of its own in another
    thread, and return once the broker has sent it to the consumer: this thread's event loop
    is blocked meanwhile, so the message waits unread in its clients' sockets."""

    async def publish_and_see_it_sent() -> None:
        async with jetstream(server) as js:
            await js.publish("cart.events", b"1", headers={"Nats-Msg-Id": message_id})
            await until(lambda: delivered_unacked(js, 1), "the message on the open request")

    failures: list[BaseException] = []
    thread = threading.Thread(
        target=lambda: _run_collecting(publish_and_see_it_sent, failures), daemon=True
    )
    thread.start()
    thread.join()
    assert not failures, failures


def _run_collecting(
    run: Callable[[], Coroutine[Any, Any, None]], failures: list[BaseException]
) -> None:
    try:
        asyncio.run(run())
    except BaseException as exc:  # reported by the caller's thread
        failures.append(exc)


async def test_a_message_in_flight_to_an_open_request_when_closing_is_given_back(
    nats_server: NatsServer,
) -> None:
    async with jetstream(nats_server) as js:
        first = await subscriber(js)
        await acked_at_once(js, first, "zero", wait=DEADLINE_S)  # 9 still asked for
        await until(lambda: delivered_unacked(js, 0), "the ack of the first message")
        delivered_while_this_loop_waits(nats_server, "one")
        await first.close()  # "one" is in the socket, not yet read

        # Given back, it goes to the next consumer now, not after the 30 s ack wait. An
        # unsubscribe alone dropped it as it was read, for a subscription already gone.
        second = await subscriber(js)
        [delivery] = await second.fetch(10, wait=DEADLINE_S)
        assert delivery.message.id == "one"
        assert delivery.attempt == 2  # given back once
        await delivery.ack()
        await second.close()


async def test_an_expired_request_is_renewed_while_a_fetch_waits(
    nats_server: NatsServer,
) -> None:
    async with jetstream(nats_server) as js:
        consumer = await subscriber(js)
        await acked_at_once(js, consumer, "first", wait=0.2)  # its request lives 0.2 s
        expired_at = time.monotonic() + 0.2

        async def publish_once_expired() -> None:
            # What is waited for here is the clock itself: the first request's expiry.
            await until(lambda: _past(expired_at + 0.3), "the first request's expiry")
            await js.publish("cart.events", b"2", headers={"Nats-Msg-Id": "late"})

        publishing = asyncio.create_task(publish_once_expired())
        started = time.monotonic()
        deliveries = await consumer.fetch(10, wait=DEADLINE_S)  # outlives that request
        await publishing
        assert [d.message.id for d in deliveries] == ["late"]
        assert time.monotonic() - started < DEADLINE_S / 2  # not at the fetch's deadline
        await deliveries[0].ack()
        await consumer.close()


async def _past(moment: float) -> bool:
    return time.monotonic() >= moment
