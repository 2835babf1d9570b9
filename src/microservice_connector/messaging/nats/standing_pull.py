"""A pull request kept open on a JetStream consumer, so messages arrive while the consumer is
busy with the last batch.

nats-py's `PullSubscription.fetch` asks for messages only once the consumer asks for its next
batch: each batch waits for a round trip to the server (a no-wait probe, its answer, often a
second request), on top of the handling of the batch before it. `StandingPull` keeps a
request for up to a batch of messages open at all times, renewed when half of it has arrived
or when it is about to expire, so the server sends each message as it is stored and the next
`take` finds it already in hand. What it asks for stays bounded: at most one and a half
batches, each request expiring after the `take`'s wait, so a request the server lost (a
restart) is renewed within that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError

_STATUS = "Status"
# Statuses that end a pull request (it expired, or the server cut it short) or say nothing
# (a heartbeat, "no messages"): not messages, and not errors either, as nats-py's fetch has it.
_REQUEST_ENDED = {"408", "409"}
_NOTHING = {"100", "404"}
RENEW_MARGIN_S = 0.05  # a request this close to its expiry is renewed before waiting on it
_PULL_ATTRIBUTES = ("_sub", "_nms", "_deliver")


class StandingPull:
    """Takes a pull subscription's messages from a request kept open (see the module). For
    one consumer task at a time; `close` gives back what arrived and was not taken."""

    def __init__(self, client: Client, pull: JetStreamContext.PullSubscription) -> None:
        self._client = client
        self._pull = pull
        self._inbox: Any = pull._sub
        self._queue: asyncio.Queue[Msg] = self._inbox._pending_queue
        self._remaining = 0  # messages the open requests may still bring
        self._expires_at = 0.0  # monotonic time the newest request expires

    @staticmethod
    def supported(pull: JetStreamContext.PullSubscription) -> bool:
        """Whether this nats-py keeps a pull subscription's inbox where `StandingPull` reads
        it; where it does not, nats-py's own `fetch` is the way."""
        inbox = getattr(pull, "_sub", None)
        return all(hasattr(pull, name) for name in _PULL_ATTRIBUTES) and isinstance(
            getattr(inbox, "_pending_queue", None), asyncio.Queue
        )

    async def take(self, max_messages: int, wait: float) -> list[Msg]:
        """Up to `max_messages` messages: those already here at once, else the first to come
        within `wait` s (and any arriving with it); [] if none came. Raises `APIError` when
        the server answers a request with an error (no such consumer: 503)."""
        deadline = time.monotonic() + wait
        taken: list[Msg] = []
        while True:
            await self._renew_if_due(max_messages, wait)
            self._drain(taken, max_messages)
            now = time.monotonic()
            if taken or now >= deadline:
                break
            until = min(deadline, self._expires_at - RENEW_MARGIN_S)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(until - now, 0.0)):
                    self._keep(await self._queue.get(), taken)
        self._remaining = max(0, self._remaining - len(taken))
        return taken

    def forget_requests(self) -> None:
        """The open requests may be gone (the connection dropped): ask anew on the next take."""
        self._remaining, self._expires_at = 0, 0.0

    async def close(self) -> None:
        """Give back the messages that arrived and were not taken (a nak each, best effort:
        what is not given back comes again after the consumer's ack wait)."""
        while not self._queue.empty():
            message = self._queue.get_nowait()
            self._queue.task_done()
            if _status(message) is None:
                with contextlib.suppress(NatsError, OSError):
                    await message.nak()

    async def _renew_if_due(self, max_messages: int, wait: float) -> None:
        """Ask for another `max_messages` once half of the last request arrived, or once it
        is about to expire; each request lives `wait` s."""
        now = time.monotonic()
        if self._remaining > max_messages // 2 and now < self._expires_at - RENEW_MARGIN_S:
            return
        life = max(wait, 2 * RENEW_MARGIN_S)
        request = {"batch": max_messages, "expires": int(life * 1e9)}
        await self._client.publish(
            self._pull._nms, json.dumps(request).encode(), reply=self._pull._deliver
        )
        self._remaining, self._expires_at = max_messages, now + life

    def _drain(self, taken: list[Msg], limit: int) -> None:
        """Move what is already here into `taken`, up to `limit` messages."""
        while len(taken) < limit and not self._queue.empty():
            self._keep(self._queue.get_nowait(), taken)

    def _keep(self, message: Msg, taken: list[Msg]) -> None:
        """A message goes into `taken`; a status is read: a request ended, or an error."""
        self._inbox._pending_size -= len(message.data)
        self._queue.task_done()
        status = _status(message)
        if status is None:
            taken.append(message)
        elif status in _REQUEST_ENDED:
            self._remaining = 0  # renewed on the next look
        elif status not in _NOTHING:
            if taken:  # hand over what came; the next request meets the error again
                self.forget_requests()
                return
            APIError.from_msg(message)


def _status(message: Msg) -> str | None:
    """The status of a message the server sent about a request (no reply subject, a
    `Status` header), or None for a message of the stream (it carries its ack subject)."""
    if message.reply or not message.headers:
        return None
    status: str | None = message.headers.get(_STATUS)
    return status
