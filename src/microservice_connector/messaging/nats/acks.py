"""JetStream's publish acknowledgements, settled as the client reads them.

nats-py hands each message of a subscription to a task of its own, which then calls the
subscription's callback: `JetStreamContext.publish_async` settles an ack's future there, and
a batch's waiter wakes a turn later still. On an event loop that also serves HTTP, each of
those turns waits behind every request ready to run; measured at 1,000 commands/s on the
cart service, a relay round's acks took 2.3 ms (p50) that way and 1.2 ms settled at once.

`AckInbox` subscribes one wildcard reply subject per connection and swaps the subscription's
pending queue (an `asyncio.Queue` nats-py fills from its reader) for one that settles the
ack where nats-py puts it. That queue is nats-py's own attribute, not its documented API:
where a version has none, the inbox falls back to a subscription callback, slower but the
same in every result.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header, PubAck
from nats.js.errors import APIError

log = logging.getLogger(__name__)

NO_RESPONDERS = "503"  # the status of the answer when no stream holds the subject


class AckBatch:
    """The acknowledgements awaited for one batch of publishes, one reply subject each."""

    def __init__(self, prefix: str, first: int, size: int) -> None:
        self._prefix = prefix
        self._first = first
        self.answers: list[Msg | None] = [None] * size
        self._open = [True] * size  # still waiting for an answer
        self._left = size
        self._all_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if size == 0:
            self._all_in.set_result(None)

    def reply_to(self, index: int) -> str:
        """The reply subject for the batch's `index`th publish."""
        return f"{self._prefix}{self._first + index}"

    def tokens(self) -> range:
        """The tokens of the batch's reply subjects."""
        return range(self._first, self._first + len(self.answers))

    def settle(self, index: int, answer: Msg) -> None:
        """Record the broker's answer to the `index`th publish: the first one, and none for a
        publish given up on."""
        if self._open[index]:
            self.answers[index] = answer
            self._close(index)

    def give_up(self, index: int) -> None:
        """Stop waiting for the `index`th publish (not sent, or not known to be): an answer
        that comes after all is ignored."""
        if self._open[index]:
            self._close(index)

    def _close(self, index: int) -> None:
        self._open[index] = False
        self._left -= 1
        if self._left == 0 and not self._all_in.done():
            self._all_in.set_result(None)

    async def answered(self, within: float) -> None:
        """Until every sent publish is answered, or `within` s."""
        await asyncio.wait([self._all_in], timeout=within)


class AckInbox:
    """Where a connection's publishers get their acknowledgements: one wildcard reply
    subject, opened on first use; each answer settles its `AckBatch` as soon as the client
    has read it. One per connection (`of`), however many publishers it serves."""

    @classmethod
    def of(cls, client: Client) -> AckInbox:
        """The inbox of `client`, made on first use and kept while the client lives."""
        inbox = _INBOXES.get(client)
        if inbox is None:
            inbox = _INBOXES[client] = cls(client)
        return inbox

    def __init__(self, client: Client) -> None:
        self._client = client
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._next = 0
        self._waiting: dict[str, tuple[AckBatch, int]] = {}
        self._opening = asyncio.Lock()

    async def expect(self, size: int) -> AckBatch:
        """A batch of `size` publishes to await, its reply subjects registered here."""
        if self._subscription is None:
            async with self._opening:  # publishes racing to be first open it once
                if self._subscription is None:
                    await self._open()
        batch = AckBatch(self._prefix, self._next, size)
        self._next += size
        for index, token in enumerate(batch.tokens()):
            self._waiting[str(token)] = (batch, index)
        return batch

    def forget(self, batch: AckBatch) -> None:
        """Stop routing answers to `batch`: later ones are dropped."""
        for token in batch.tokens():
            self._waiting.pop(str(token), None)

    async def _open(self) -> None:
        self._prefix = self._client.new_inbox() + "."
        subject = self._prefix + "*"
        subscription = await self._client.subscribe(subject, pending_bytes_limit=0)
        if settles_in_reader(subscription):
            subscription._pending_queue = _SettlingQueue(self._take)
        else:  # not the nats-py this was written for: its callback task is just as right
            await subscription.unsubscribe()
            subscription = await self._client.subscribe(subject, cb=self._take_later)
        self._subscription = subscription

    def _take(self, answer: Msg) -> None:
        waiting = self._waiting.pop(answer.subject[len(self._prefix) :], None)
        if waiting is not None:
            batch, index = waiting
            batch.settle(index, answer)

    async def _take_later(self, answer: Msg) -> None:
        self._take(answer)


_INBOXES: weakref.WeakKeyDictionary[Client, AckInbox] = weakref.WeakKeyDictionary()


def settles_in_reader(subscription: Subscription) -> bool:
    """Whether `subscription` has the pending queue this module replaces."""
    return isinstance(getattr(subscription, "_pending_queue", None), asyncio.Queue)


class _SettlingQueue(asyncio.Queue[Msg]):
    """A pending queue that hands each message on at once and so stays empty."""

    def __init__(self, take: Callable[[Msg], None]) -> None:
        super().__init__()
        self._take = take

    def put_nowait(self, item: Msg) -> None:
        try:
            self._take(item)
        except Exception:  # nats-py's reader must go on whatever an answer holds
            log.exception("a JetStream acknowledgement could not be settled")


class NoStream(LookupError):
    """No JetStream stream holds the subject a message was published to."""


def read_ack(answer: Msg) -> PubAck:
    """The acknowledgement in the broker's `answer`; raises `APIError` for a refusal and
    `NoStream` when no stream holds the subject."""
    if answer.headers and answer.headers.get(Header.STATUS) == NO_RESPONDERS:
        raise NoStream("no stream holds the subject")
    body = _decode_ack(answer.data)  # raises ValueError if it is not such JSON
    if body.error is not None:
        raise APIError.from_error(body.error)
    if body.stream is None or body.seq is None:
        raise ValueError(f"an acknowledgement without its stream or sequence: {answer.data!r}")
    return PubAck(stream=body.stream, seq=body.seq, domain=body.domain, duplicate=body.duplicate)


class _AckBody(msgspec.Struct):
    """What a JetStream publish acknowledgement carries that the publisher reads."""

    stream: str | None = None
    seq: int | None = None
    domain: str | None = None
    duplicate: bool | None = None
    error: dict[str, Any] | None = None


# Read once for every message: 0.6 µs against 4.0 µs for `json.loads` and `PubAck.from_response`.
_decode_ack = msgspec.json.Decoder(_AckBody).decode
