"""A nats-server that lost its store also lost billing's durable consumer: the subscriber
makes it again and receives what the new stream holds, without a restart of its process."""

from __future__ import annotations

import shutil
import time

import nats

from microservice_connector.messaging.nats import NatsSubscriber, ensure_stream
from support.nats import NatsServer

DEADLINE_S = 20.0


async def test_a_subscriber_whose_consumer_the_broker_lost_makes_it_again(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        js = client.jetstream()
        await ensure_stream(js, "CART", ["cart.events"])
        subscriber = await NatsSubscriber.create(
            js, stream="CART", subject="cart.events", durable="billing"
        )
        await js.publish("cart.events", b"before", headers={"Nats-Msg-Id": "before"})
        [first] = await subscriber.fetch(10, wait=2.0)
        await first.ack()
        nats_server.kill()
        shutil.rmtree(nats_server.store_dir / "jetstream")
        nats_server.start()

        received: list[str] = []
        deadline = time.monotonic() + DEADLINE_S
        while received != ["after"]:
            assert time.monotonic() < deadline, "the lost consumer was not made again"
            try:
                await ensure_stream(js, "CART", ["cart.events"])  # as the relay's audit does
                await js.publish("cart.events", b"after", headers={"Nats-Msg-Id": "after"})
                deliveries = await subscriber.fetch(10, wait=0.5)
            except Exception:  # the server is coming back: try again
                continue
            received = [delivery.message.id for delivery in deliveries]

        assert first.message.id == "before"
    finally:
        await client.close()
