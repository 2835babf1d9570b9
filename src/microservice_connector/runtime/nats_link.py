"""A service's link to NATS: connects in the background, so the service starts without it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext

from microservice_connector.messaging.nats.connection import connect_nats, ensure_stream
from microservice_connector.messaging.nats.dead_letters import NatsDeadLetters
from microservice_connector.messaging.nats.holdings import NatsHoldings
from microservice_connector.messaging.nats.publisher import NatsPublisher
from microservice_connector.messaging.nats.subscriber import NatsSubscriber
from microservice_connector.runtime.background import until_stopped
from microservice_connector.runtime.nats_options import redact

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 2
STREAMS: Mapping[str, Sequence[str]] = {
    "CART": ["cart.events"],
    "BILLING": ["billing.events"],
    "DEADLETTER": ["deadletter.>"],
}


class NatsLink:
    """Connects (retrying with backoff) and makes sure the streams exist; `ready()` waits."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        name: str,
        options: Mapping[str, Any] | None = None,
        replicas: int = 1,
    ) -> None:
        """`options` (credentials, TLS: see `nats_connect_options`) go to `connect_nats`;
        streams get `replicas` copies (their durable consumers inherit it)."""
        self._servers = list(servers)
        self._shown = ", ".join(redact(url) for url in self._servers)  # for logs and /readyz
        self._name = name
        self._options = dict(options or {})
        self._replicas = replicas
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether the client is connected right now."""
        return self._client is not None and self._client.is_connected

    async def check(self) -> None:
        """Raise unless connected (for `/readyz`)."""
        if not self.connected:
            raise ConnectionError(f"not connected to NATS at {self._shown}")

    async def ready(self) -> JetStreamContext:
        """The JetStream context, once connected and the streams exist."""
        await self._ready.wait()
        assert self._js is not None
        return self._js

    async def publisher(self) -> NatsPublisher:
        """A JetStream publisher, once connected."""
        return NatsPublisher(await self.ready())

    async def holdings(self) -> NatsHoldings:
        """The streams' holdings (made again, with as many replicas, if the server lost them)."""
        return NatsHoldings(await self.ready(), STREAMS, replicas=self._replicas)

    async def subscriber(self, topic: str, group: str) -> NatsSubscriber:
        """Durable pull consumer `group` of `topic` on the stream holding it, once connected."""
        stream = next(name for name, subjects in STREAMS.items() if topic in subjects)
        return await NatsSubscriber.create(
            await self.ready(), stream=stream, subject=topic, durable=group
        )

    async def dead_letters(self) -> NatsDeadLetters:
        """Dead letters on the DEADLETTER stream, once connected."""
        return NatsDeadLetters(await self.ready())

    async def run(self, stop: asyncio.Event) -> None:
        """Connect and set up streams, retrying until done or `stop` is set."""
        delay = 0.1
        while not stop.is_set():
            client: Client | None = None
            try:
                connecting = connect_nats(self._servers, name=self._name, **self._options)
                client = await until_stopped(connecting, stop)  # it waits for a server
                if client is None:
                    return
                js = client.jetstream()
                for stream, subjects in STREAMS.items():
                    await ensure_stream(js, stream, subjects, replicas=self._replicas)
            except Exception as exc:
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
                log.warning("NATS at %s not ready (%s); retrying", self._shown, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)
                continue
            self._client, self._js = client, js
            self._ready.set()
            log.info(
                "connected to NATS at %s",
                client.connected_url.netloc if client.connected_url else "?",
            )
            return

    async def close(self) -> None:
        """Flush what was sent (acks included) and close the connection."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                # Acks already sent go out before the socket closes; nothing is left unsettled
                # that the broker would not redeliver.
                await self._client.flush(timeout=FLUSH_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await self._client.close()
