"""A request body read whole before the app runs, then handed to the app as if unread: the
one way the command lane and the `Idempotency-Key` middleware buffer a body."""

from __future__ import annotations

from microservice_connector.web.guards import Message, Receive


async def read_body(receive: Receive) -> tuple[bytes, Message]:
    """The whole body, and the message that stands for it: one `http.request` holding all of
    it, or, if the client left while sending it, the message that said so."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message  # the client left: the app hears it too
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            body = b"".join(chunks)
            return body, {"type": "http.request", "body": body, "more_body": False}


def handing_on(first: Message, receive: Receive) -> Receive:
    """A `receive` that answers `first` (from `read_body`) once, then whatever comes next."""
    handed = False

    async def again() -> Message:
        nonlocal handed
        if not handed:
            handed = True
            return first
        return await receive()

    return again
