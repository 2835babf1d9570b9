"""What JetStream holds of a topic: the stream's last sequence and its creation time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from microservice_connector.messaging.holdings import Holding
from microservice_connector.messaging.nats.connection import BrokerUnavailable, ensure_stream

# JetStream sequences are unsigned 64-bit; Python's int and the outbox's BIGINT take 2^63-1.
LAST_SEQUENCE = 2**63 - 1


class NatsHoldings:
    """The `BrokerHoldings` of JetStream: one stream per topic (`streams`: name -> subjects),
    created again with `replicas` copies if the server lost it."""

    def __init__(
        self, js: JetStreamContext, streams: Mapping[str, Sequence[str]], *, replicas: int = 1
    ) -> None:
        self._js = js
        self._streams = streams
        self._replicas = replicas

    async def holdings(self, topic: str) -> list[Holding]:
        """The stream holding `topic`: its last sequence and when it was created."""
        stream = next(name for name, subjects in self._streams.items() if topic in subjects)
        try:
            info = await ensure_stream(
                self._js, stream, self._streams[stream], replicas=self._replicas
            )
        except (TimeoutError, NatsError) as exc:
            raise BrokerUnavailable(f"cannot read stream {stream}: {exc!r}") from exc
        return [Holding(1, LAST_SEQUENCE, info.state.last_seq, info.created)]
