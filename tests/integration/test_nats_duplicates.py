"""JetStream's duplicate window outlives a purge: a "duplicate" of a message the stream no
longer holds is not taken as stored, so the outbox keeps the row and publishes it again."""

from __future__ import annotations

import nats

from microservice_connector.messaging.message import Message
from microservice_connector.messaging.nats import NatsPublisher, ensure_stream
from support.nats import NatsServer


async def test_a_duplicate_of_a_message_still_held_is_acknowledged_and_of_a_purged_one_not(
    nats_server: NatsServer,
) -> None:
    client = await nats.connect(nats_server.url)
    try:
        js = client.jetstream()
        await ensure_stream(js, "CART", ["cart.events"])
        publisher = NatsPublisher(js, ack_timeout=2.0)
        message = Message("event-1", "cart.events", b"{}", {"event-id": "event-1"})
        [first] = await publisher.publish([message])

        [again] = await publisher.publish([message])
        await js.purge_stream("CART")
        [after_purge] = await publisher.publish([message])

        assert (first.acknowledged, first.duplicate) == (True, False)
        assert (again.acknowledged, again.duplicate) == (True, True)
        assert again.sequence == first.sequence
        assert not after_purge.acknowledged
        assert "no longer holds" in (after_purge.error or "")
    finally:
        await client.close()
