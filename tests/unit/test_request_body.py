"""Reading a request body whole before the app runs: the app then receives it as one message,
followed by whatever the client sends next; a client that leaves midway is heard as gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from microservice_connector.web.guards import Message, Receive
from microservice_connector.web.request_body import handing_on, read_body


def client(messages: Iterable[Message]) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


def test_a_body_in_chunks_is_handed_on_as_one_message_then_the_rest() -> None:
    async def story() -> None:
        receive = client(
            [
                {"type": "http.request", "body": b'{"item_id": ', "more_body": True},
                {"type": "http.request", "body": b'"a", "quantity": 2}', "more_body": False},
                {"type": "http.disconnect"},
            ]
        )
        body, first = await read_body(receive)
        assert body == b'{"item_id": "a", "quantity": 2}'
        again = handing_on(first, receive)
        assert await again() == {"type": "http.request", "body": body, "more_body": False}
        assert await again() == {"type": "http.disconnect"}  # from the client, after the body

    asyncio.run(story())


def test_a_client_that_leaves_midway_is_heard_as_gone() -> None:
    async def story() -> None:
        receive = client(
            [
                {"type": "http.request", "body": b"part", "more_body": True},
                {"type": "http.disconnect"},
            ]
        )
        body, first = await read_body(receive)
        assert (body, first) == (b"part", {"type": "http.disconnect"})
        assert await handing_on(first, receive)() == {"type": "http.disconnect"}

    asyncio.run(story())
