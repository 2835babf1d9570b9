"""A pull request kept open on a JetStream consumer, so messages arrive while the consumer is
busy with the last batch.

nats-py's `PullSubscription.fetch` asks for messages only once the consumer asks for its next
batch: each batch waits for a round trip to the server (a no-wait probe, its answer, often a
second request), on top of the handling of the batch before it. `StandingPull` keeps a
request for up to a batch open while the consumer takes batch after batch: it asks again
once no more than half a batch is still asked for and not yet taken, or when the newest
request is about to expire; each request lives as long as the `take` that sent it waits. So
the server sends each message as it is stored, and the next `take` finds it in hand. It
counts what it asked for and what arrived or was called off (the server's 408 and 409 say
how many), so it never has more than two batches asked for and not taken. A reconnect
forgets the requests (the server may have dropped them); a lost request otherwise lapses
within the wait of the `take` that sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError

_STATUS = "Status"
_DESCRIPTION = "Description"
_UNFILLED = "Nats-Pending-Messages"  # on a 408/409: how many of the request never came
# Statuses that end a pull request (it expired, or the server cut it short) or say nothing
# (a heartbeat, "no messages"): not messages, and not errors either, as nats-py's fetch has it.
_REQUEST_ENDED = {"408", "409"}
_NOTHING = {"100", "404"}
# A 409 that every request would meet again (the consumer's limits, a push consumer): an error.
_REFUSALS = ("exceeded maxrequest", "exceeded maxwaiting", "push based")
SERVICE_UNAVAILABLE = 503  # no such consumer (no responders)
RENEW_MARGIN_S = 0.05  # a request this close to its expiry is renewed before waiting on it
_PULL_ATTRIBUTES = ("_sub", "_nms", "_deliver")

log = logging.getLogger(__name__)


class StandingPull:
    """Takes a pull subscription's messages from requests kept open (see the module). For
    one consumer task at a time; `left_over` hands what arrived and was not taken back."""

    def __init__(self, client: Client, pull: JetStreamContext.PullSubscription) -> None:
        self._client = client
        self._pull = pull
        self._inbox: Any = pull._sub
        self._queue: asyncio.Queue[Msg] = self._inbox._pending_queue
        self._asked = 0  # messages asked for by the open requests and not yet taken
        self._expires_at = 0.0  # monotonic time the newest request expires
        self._asked_at = 0.0  # when the newest request was sent
        self._ended = False  # the server ended a request since the last ask
        self._reconnects = self._client_reconnects()

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
        within `wait` s (and any arriving with it); [] if none came or the connection
        dropped. Raises `APIError` when the server refuses a request (no such consumer: 503;
        a request over the consumer's limits: 409)."""
        deadline = time.monotonic() + wait
        taken: list[Msg] = []
        while self._client.is_connected:
            await self._ask_if_due(max_messages, wait)
            self._drain(taken, max_messages)
            now = time.monotonic()
            if taken or now >= deadline:
                return taken
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(min(deadline, self._due_at()) - now, 0.0)):
                    self._keep(await self._queue.get(), taken)
        self.forget_requests()  # the server may drop them with the connection
        return taken

    def forget_requests(self) -> None:
        """The open requests may be gone: ask anew on the next take."""
        self._asked, self._expires_at = 0, 0.0

    def left_over(self) -> list[Msg]:
        """What arrived and was not taken, taken now (statuses dropped): to give back."""
        left: list[Msg] = []
        while not self._queue.empty():
            self._give_back_later(self._queue.get_nowait(), left)
        return left

    async def drained(self) -> list[Msg]:
        """End the subscription so that the server sends nothing more to this inbox, and
        return what it sent and was not taken (statuses dropped): to give back. A request
        still open would otherwise receive a message after an unsubscribe and leave it
        unacknowledged until the consumer's ack wait. nats-py's drain tells the server,
        makes a round trip (what the server sent before it arrives first), then waits until
        the inbox's queue is taken; a round trip that does not come back within nats-py's
        flush timeout (10 s) fails it, and what arrived until then is returned. Never given
        up on early: cancelling nats-py's round trip would break its connection when the
        answer came."""
        draining = asyncio.ensure_future(self._inbox.drain())
        left = self.left_over()
        arriving: asyncio.Future[Msg] | None = None
        try:
            while not draining.done():
                arriving = asyncio.ensure_future(self._queue.get())
                await asyncio.wait({draining, arriving}, return_when=asyncio.FIRST_COMPLETED)
                if arriving.done():
                    self._give_back_later(arriving.result(), left)
        finally:
            if arriving is not None and not arriving.done():
                arriving.cancel()  # an item it did not get stays queued, for left_over
            if not draining.done():  # this close was cancelled: so is the drain
                draining.cancel()
        if not draining.cancelled() and draining.exception() is not None:
            log.warning("could not drain the pull subscription: %r", draining.exception())
        return left + self.left_over()

    async def _ask_if_due(self, max_messages: int, wait: float) -> None:
        """Ask for another `max_messages` once no more than half a batch is asked for, or
        once the newest request is about to expire; each request lives `wait` s. After the
        server ended a request, no sooner than `RENEW_MARGIN_S` after the last ask."""
        reconnects = self._client_reconnects()
        if reconnects != self._reconnects:
            self._reconnects = reconnects
            self.forget_requests()
        now = time.monotonic()
        if self._ended and now < self._asked_at + RENEW_MARGIN_S:
            return
        self._ended = False  # past the pause, the usual rules decide
        if self._asked > max_messages // 2 and now < self._expires_at - RENEW_MARGIN_S:
            return
        life = max(wait, 2 * RENEW_MARGIN_S)
        request = {"batch": max_messages, "expires": int(life * 1e9)}
        await self._client.publish(
            self._pull._nms, json.dumps(request).encode(), reply=self._pull._deliver
        )
        self._asked += max_messages
        # The pause after an ended request counts from when this one went, not from `now`:
        # the process may be held between the two.
        self._expires_at, self._asked_at = now + life, time.monotonic()

    def _due_at(self) -> float:
        """When the next ask falls due, unless messages come first."""
        if self._ended:
            return self._asked_at + RENEW_MARGIN_S
        return self._expires_at - RENEW_MARGIN_S

    def _client_reconnects(self) -> int:
        """How often the client reconnected so far."""
        return int(self._client.stats.get("reconnects", 0))

    def _drain(self, taken: list[Msg], limit: int) -> None:
        """Move what is already here into `taken`, up to `limit` messages."""
        while len(taken) < limit and not self._queue.empty():
            self._keep(self._queue.get_nowait(), taken)

    def _give_back_later(self, message: Msg, left: list[Msg]) -> None:
        """`message`, just taken off the inbox's queue, goes into `left` unless a status."""
        if _status(self._taken_off(message)) is None:
            left.append(message)

    def _taken_off(self, message: Msg) -> Msg:
        """`message`, just taken off the inbox's queue, with nats-py's bookkeeping of the
        inbox (bytes pending, tasks done) brought up to date."""
        self._inbox._pending_size -= len(message.data)
        self._queue.task_done()
        return message

    def _keep(self, message: Msg, taken: list[Msg]) -> None:
        """A message goes into `taken`; a status is read: a request ended, or an error."""
        status = _status(self._taken_off(message))
        if status is None:
            taken.append(message)
            self._asked = max(0, self._asked - 1)
            return
        if status in _NOTHING:
            return
        description = (message.headers or {}).get(_DESCRIPTION, "")
        if status in _REQUEST_ENDED and not any(r in description.lower() for r in _REFUSALS):
            unfilled = (message.headers or {}).get(_UNFILLED, "")
            if unfilled.isdigit():
                self._asked = max(0, self._asked - int(unfilled))
            else:
                self.forget_requests()
            self._ended = True
            return
        self.forget_requests()
        if not taken:  # with messages in hand, the next request meets the error again
            code = int(status) if status.isdigit() else None
            if code == SERVICE_UNAVAILABLE:
                raise ServiceUnavailableError(code=code, description=description)
            raise APIError(code=code, description=description)


def _status(message: Msg) -> str | None:
    """The status of a message the server sent about a request (no reply subject, a
    `Status` header), or None for a message of the stream (it carries its ack subject)."""
    if message.reply or not message.headers:
        return None
    status: str | None = message.headers.get(_STATUS)
    return status
