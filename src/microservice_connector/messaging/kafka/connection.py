"""Reaching Kafka: client settings (SASL, TLS), topics made on demand, the shared producer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
CHECK_TIMEOUT_S = 1.5
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


class KafkaUnavailable(ConnectionError):
    """The broker did not answer or refused the request; retrying later may succeed."""


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """How to reach the cluster. SASL and TLS settings are handed to aiokafka unchanged:
    `security_protocol` one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; `sasl_mechanism`
    PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; `ssl_*` PEM files (none: the system's CAs)."""

    bootstrap: str
    client_id: str = "microservice-connector"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # kept out of logs
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    idempotence: bool = True  # asked for; dropped with a warning where the broker lacks it
    request_timeout_ms: int = 10_000

    def servers(self) -> list[str]:
        """The bootstrap `host:port` list: `bootstrap` may name several, comma-separated."""
        return [server.strip() for server in self.bootstrap.split(",") if server.strip()]

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client (producer, consumer, admin) takes."""
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security protocol must be one of {', '.join(SECURITY_PROTOCOLS)}")
        options: dict[str, Any] = {
            "bootstrap_servers": self.servers(),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": 100,
        }
        if self.security_protocol.startswith("SASL_"):
            options |= {
                "sasl_mechanism": self.sasl_mechanism or "PLAIN",
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return options

    def describe(self) -> str:
        """Where it points, for messages: never the password."""
        return f"Kafka at {', '.join(self.servers())} ({self.security_protocol})"


async def ensure_topics(
    config: KafkaConfig, partitions: Mapping[str, int], *, replication_factor: int = 1
) -> None:
    """Create each topic with its partition count unless it exists (an existing topic keeps
    the count it has). Idempotent and safe to race; raises `KafkaUnavailable`."""
    admin = AIOKafkaAdminClient(**config.client_options())
    try:
        await admin.start()
        wanted = [NewTopic(name, count, replication_factor) for name, count in partitions.items()]
        response = await admin.create_topics(wanted)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailable(f"cannot create topics on {config.describe()}: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    for topic, code, message in _topic_errors(response):
        if code not in (0, TOPIC_ALREADY_EXISTS):
            raise KafkaUnavailable(f"topic {topic} not created: {message or code}")


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    return [
        (str(error[0]), int(error[1]), error[2] if len(error) > 2 else None)
        for error in response.topic_errors
    ]


async def start_producer(config: KafkaConfig) -> AIOKafkaProducer:
    """A started producer with `acks=all`, idempotent where the broker can give it a producer
    id (Tansu's in-memory engine cannot: then it goes on without, and says so once).
    Raises `KafkaUnavailable` while no broker answers."""
    options = {**config.client_options(), "acks": "all", "linger_ms": 2}
    if config.idempotence:
        try:
            return await _started(AIOKafkaProducer(**options, enable_idempotence=True))
        except (KafkaConnectionError, OSError, TimeoutError) as exc:
            raise KafkaUnavailable(f"cannot reach {config.describe()}: {exc!r}") from exc
        except KafkaError as exc:
            log.warning(
                "%s gave no idempotent producer id (%r); publishing with acks=all only",
                config.describe(),
                exc,
            )
    try:
        return await _started(AIOKafkaProducer(**options))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailable(f"cannot reach {config.describe()}: {exc!r}") from exc


async def _started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """`producer`, started; or stopped again, leaving nothing running, and the reason raised
    (a cancel too: the caller gave up waiting)."""
    try:
        await producer.start()
    except BaseException:
        await _stop_quietly(producer)
        raise
    return producer


async def check_reachable(producer: AIOKafkaProducer) -> None:
    """Raise `KafkaUnavailable` unless a broker answers a metadata request within 1.5 s."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), CHECK_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailable(f"no Kafka broker answers ({exc!r})") from exc


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()
