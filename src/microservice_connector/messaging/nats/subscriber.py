"""Consuming from JetStream: a durable pull consumer with explicit acks."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, OutboundBufferLimitError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from microservice_connector.messaging.message import Delivery, Message
from microservice_connector.messaging.nats.connection import BrokerUnavailable, client_of
from microservice_connector.messaging.nats.publisher import MSG_ID_HEADER
from microservice_connector.messaging.nats.standing_pull import StandingPull

log = logging.getLogger(__name__)
EVENT_ID_HEADER = "event-id"


class NatsSubscriber:
    """A durable pull consumer of one subject, with a pull request kept open where nats-py
    allows it (`StandingPull`), so messages arrive while the last batch is being handled:
    what is fetched and not acked within `ack_wait` is delivered again (attempt + 1);
    `nak(delay)` redelivers after `delay`; what arrived and was not fetched when it closes is
    given back. First deliveries
    come in stream order; redeliveries may overtake them. If the broker lost the consumer
    (its stream deleted and made again, its store thrown away), the next fetch creates it
    again, and it delivers the new stream from its start."""

    def __init__(
        self,
        js: JetStreamContext,
        subscription: JetStreamContext.PullSubscription,
        *,
        stream: str,
        config: ConsumerConfig,
    ) -> None:
        self._js = js
        self._client = client_of(js)
        self._subscription = subscription
        self._stream = stream
        self._config = config
        self._durable = config.durable_name or ""
        self._closed = False
        self._standing = self._standing_pull(subscription)

    @classmethod
    async def create(
        cls,
        js: JetStreamContext,
        *,
        stream: str,
        subject: str,
        durable: str,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1000,
    ) -> NatsSubscriber:
        """Create the durable consumer, or bring an existing one to these settings, and bind
        to it; idempotent and safe from several processes (they then share the work)."""
        config = ConsumerConfig(
            name=durable,
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            filter_subject=subject,
        )
        await js.add_consumer(stream, config)
        subscription = await js.pull_subscribe_bind(durable, stream=stream)
        return cls(js, subscription, stream=stream, config=config)

    async def fetch(self, max_messages: int, wait: float) -> list[Delivery]:
        """Up to `max_messages` deliveries, waiting at most `wait` s for the first; [] if none
        came. Raises `BrokerUnavailable` (a `ConnectionError`) after `wait` s while the broker
        is unreachable, and at once if the connection is closed."""
        if self._closed:
            raise RuntimeError("fetch on a closed subscriber")
        if self._client.is_closed:
            raise BrokerUnavailable("the NATS connection is closed")
        if not self._client.is_connected:
            # A pull request sent now would be buffered and linger after the reconnect.
            await asyncio.sleep(wait)
            raise BrokerUnavailable(f"disconnected from NATS; nothing fetched in {wait:g} s")
        try:
            if self._standing is not None:
                messages = await self._standing.take(max_messages, max(wait, 0.01))
            else:
                messages = await self._subscription.fetch(max_messages, timeout=max(wait, 0.01))
        except (NatsTimeoutError, TimeoutError):
            # nats-py raises a bare asyncio.TimeoutError when the deadline runs out between its
            # no-wait probe and its lingering pull request: just as much "nothing came".
            return []
        except (ConnectionClosedError, OutboundBufferLimitError) as exc:
            raise BrokerUnavailable(f"cannot fetch from NATS: {exc!r}") from exc
        except NatsError as exc:  # e.g. JetStream answering 503 while it starts up
            if await self._created_again():
                return []
            raise BrokerUnavailable(f"JetStream refused the fetch: {exc}") from exc
        return [self._delivery(message) for message in messages]

    async def _created_again(self) -> bool:
        """Create the consumer again and bind to it if the broker no longer has it."""
        try:
            await self._js.consumer_info(self._stream, self._durable)
            return False  # it is there: the fetch failed for another reason
        except NotFoundError:
            pass
        except (TimeoutError, NatsError):
            return False
        try:
            await self._js.add_consumer(self._stream, self._config)
            rebound = await self._js.pull_subscribe_bind(self._durable, stream=self._stream)
        except (TimeoutError, NatsError) as exc:  # e.g. the stream is not back yet
            log.warning("consumer %s is gone and not made again yet: %s", self._durable, exc)
            return False
        log.warning(
            "consumer %s of %s was lost by the broker; made again", self._durable, self._stream
        )
        stale, self._subscription = self._subscription, rebound
        self._standing = self._standing_pull(rebound)
        with contextlib.suppress(NatsError):
            await stale.unsubscribe()
        return True

    async def pending(self) -> int:
        """Messages not yet delivered plus deliveries not yet acked: the consumer's lag."""
        try:
            info = await self._js.consumer_info(self._stream, self._durable)
        except (TimeoutError, NatsError) as exc:
            raise BrokerUnavailable(f"cannot read consumer {self._durable}: {exc!r}") from exc
        return (info.num_pending or 0) + (info.num_ack_pending or 0)

    async def close(self) -> None:
        """Stop fetching; the durable consumer stays, and its unacked deliveries come back to
        whoever fetches next, after `ack_wait`."""
        if not self._closed:
            self._closed = True
            left = await self._end_subscription()
            # Given back once the server no longer sends to this inbox, so they go to
            # another consumer at once instead of after ack_wait.
            for message in left:
                with contextlib.suppress(NatsError, OSError):
                    await message.nak()

    async def _end_subscription(self) -> list[Msg]:
        """Unsubscribe; what arrived and was not fetched: with a standing pull, everything
        until the server stopped sending (its drain), else what is in hand."""
        left: list[Msg] = []
        if self._standing is not None and self._client.is_connected:
            left = await self._standing.drained()
        elif self._standing is not None:  # a round trip now would wait for the reconnect
            left = self._standing.left_over()
        with contextlib.suppress(NatsError):  # after a drain: already unsubscribed
            await self._subscription.unsubscribe()
        return left

    def _standing_pull(self, pull: JetStreamContext.PullSubscription) -> StandingPull | None:
        """A pull request kept open on `pull`, where this nats-py allows it."""
        return StandingPull(self._client, pull) if StandingPull.supported(pull) else None

    def _delivery(self, msg: Msg) -> Delivery:
        metadata = msg.metadata
        sequence = metadata.sequence.stream
        headers = {str(name): str(value) for name, value in (msg.headers or {}).items()}
        message_id = (
            headers.pop(MSG_ID_HEADER, None) or headers.get(EVENT_ID_HEADER) or f"nats-{sequence}"
        )

        async def nak(delay: float) -> None:
            await msg.nak(delay=delay)

        return Delivery(
            message=Message(message_id, msg.subject, msg.data, headers),
            attempt=metadata.num_delivered,
            sequence=sequence,
            _ack=msg.ack,
            _nak=nak,
        )
