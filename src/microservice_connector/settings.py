"""Configuration from the environment (prefix `MSC_`), with defaults that run on one machine."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from microservice_connector.instance import default_instance_id

DEFAULT_DATA_DIR = Path("data")
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
# One Kafka bootstrap address: a host name or IPv4 address, or an IPv6 address (bare, or in
# brackets with a port; a zone after `%` either way), and an optional port.
_BOOTSTRAP_ADDRESS = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+(?:%[\w.-]+)?\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?"
    r"|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?:%[\w.-]+)?"
)


_NATS_SCHEMES = ("nats", "tls", "ws", "wss")
_VISIBLE_ASCII = re.compile(r"[!-~]+")


def _checked_url(value: str, schemes: tuple[str, ...], example: str) -> None:
    """Raise `ValueError` unless `value` is a URL of one of `schemes` with a host (an IPv4
    address that parses, if it is one) and a port in range."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is no number or out of range
        host = parts.hostname
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise ValueError(f"{value!r} is not a URL ({exc}); give {example}") from None
    if parts.scheme not in schemes or not host or port == 0:
        raise ValueError(f"{value!r} is not a URL like {example}")
    _checked_ipv4(host, f"{value!r}: {host}")


def _checked_ipv4(host: str, shown: str) -> None:
    """Raise `ValueError` (`shown is not an IPv4 address`) if `host`, all digits and dots,
    is not an IPv4 address that parses."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{shown} is not an IPv4 address") from None


class Settings(BaseSettings):
    """Every setting the services read; `MSC_DATABASE_URL` sets `database_url`, and so on."""

    model_config = SettingsConfigDict(env_prefix="MSC_", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None
    billing_database_url: str | None = None
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # On SQLite, the cart service commits on its event loop instead of a writer thread, and
    # billing applies each batch of cart events there instead of on a worker thread.
    sqlite_commit_on_loop: bool = True
    cart_url: str = "http://127.0.0.1:8080"
    billing_url: str = "http://127.0.0.1:8081"
    # Where billing reads the cart service's stored events to heal (gap repair, catch-up);
    # MSC_CART_URL when unset. Differs from it where the browser and billing see the cart
    # service under different names (docker compose: localhost against cart-service).
    cart_store_url: str | None = None
    nats_url: str = "nats://127.0.0.1:4222"
    # Whether the nats-server `msc up` embeds fsyncs every message before acknowledging it.
    # Off by default: the broker is the fast path, and what it loses the relays publish again.
    nats_sync_always: bool = False
    # Copies of each stream (and its consumers) a JetStream cluster keeps: 3 on a 3-node one.
    nats_replicas: int = Field(default=1, ge=1, le=5)
    # NATS authentication and TLS, passed to the client unchanged (secrets never logged).
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_credentials: Path | None = None  # a .creds file (JWT and NKey seed)
    nats_tls: bool = False  # TLS with the system's CAs; implied by any nats_tls_* file
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None  # client certificate, for servers that verify clients
    nats_tls_key: Path | None = None
    nats_tls_hostname: str | None = None  # the name the server certificate must carry
    # This process among several of one service: in every log line, the metrics, and the
    # outbox leases its relay takes. Default `<hostname>-<pid>`.
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    # How long a relay's claim on outbox rows lasts (see OutboxRelay).
    relay_lease_s: float = Field(default=15.0, ge=1.0, le=3600.0, allow_inf_nan=False)
    # How often each relay checks that the broker still holds what it acknowledged (and at
    # start); what it lost is published again. See BrokerAudit.
    relay_broker_check_s: float = Field(default=10.0, ge=1.0, le=86_400.0, allow_inf_nan=False)
    # Off: the relays trust the broker; billing still heals from the store on its own.
    relay_broker_audit: bool = True
    host: str = "127.0.0.1"
    cart_port: int = Field(default=8080, ge=1, le=65535)
    billing_port: int = Field(default=8081, ge=1, le=65535)
    log_format: Literal["text", "json"] = "text"
    access_log: bool = False  # one log line per HTTP request (events are logged either way)
    api_token: SecretStr | None = None  # when set, mutating endpoints need it as a bearer token
    read_token: SecretStr | None = None  # when set, every read route needs it (or api_token)
    metrics_token: SecretStr | None = None  # when set, /metrics needs it (or api_token)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # How long a command's Idempotency-Key is remembered after it was applied.
    idempotency_ttl_s: float = Field(
        default=86_400.0, ge=1.0, le=30 * 86_400.0, allow_inf_nan=False
    )
    command_retries: int = Field(default=20, ge=0, le=1000)
    snapshot_every: int = Field(default=100, ge=0)  # a cart snapshot every N events; 0: none
    # Concurrent `GET /events/stream` clients a cart service serves; past it they get 503.
    live_feed_max_streams: int = Field(default=256, ge=1, le=100_000)
    # How long billing keeps an early event waiting for its predecessor before dead-lettering.
    billing_gap_wait_s: float = Field(default=300.0, ge=1.0, le=86_400.0, allow_inf_nan=False)
    # How long an early event waits before billing fetches its cart's missing versions from
    # the cart store; also how old a feed event must be before catch-up takes it.
    billing_repair_grace_s: float = Field(default=2.0, ge=0.0, le=3600.0, allow_inf_nan=False)
    # How often billing follows the cart store's global feed for events the broker lost.
    billing_catch_up_interval_s: float = Field(
        default=5.0, ge=0.1, le=86_400.0, allow_inf_nan=False
    )
    serializer: Literal["json", "protobuf"] = "json"  # the codec of new events
    # The broker: NATS JetStream, or Kafka (any Kafka-compatible cluster; `msc up` embeds
    # Tansu, memory-only). SASL and TLS settings go to the Kafka client unchanged.
    broker: Literal["nats", "kafka"] = "nats"
    kafka_bootstrap: str = "127.0.0.1:9092"  # host:port, comma-separated
    kafka_partitions: int = Field(default=6, ge=1, le=10_000)  # of topics we create
    kafka_replication_factor: int = Field(default=1, ge=1, le=32)
    kafka_session_timeout_ms: int = Field(default=10_000, ge=100, le=600_000)
    kafka_idempotence: bool = True  # where the broker supports it
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None

    @model_validator(mode="after")
    def _nats_urls(self) -> Settings:
        """On NATS, at least one URL in `nats_url`, each `nats://host:port` (or tls://, ws://,
        wss://): with none, the client spun at full CPU. Left alone on Kafka."""
        if self.broker != "nats":
            return self
        urls = self.nats_servers()
        if not urls:
            raise ValueError(
                "MSC_NATS_URL: no NATS address (give nats://host:port, comma-separated)"
            )
        for url in urls:
            try:  # a bare host[:port] is nats://, as the client reads it
                _checked_url(
                    url if "://" in url else f"nats://{url}", _NATS_SCHEMES, "nats://host:port"
                )
            except ValueError as exc:
                raise ValueError(f"MSC_NATS_URL: {exc}") from None
        return self

    @field_validator("cart_url", "billing_url", "cart_store_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """A service's base URL: `http(s)://host[:port]`."""
        if value is not None:
            _checked_url(value.strip(), ("http", "https"), "http://host:port")
        return value

    @field_validator("host")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        """An address to listen on; empty would mean every interface, so it must be said."""
        if not value.strip() or value != value.strip():
            raise ValueError(
                "give an address to listen on (127.0.0.1, or 0.0.0.0 for every interface)"
            )
        _checked_ipv4(value, repr(value))
        return value

    @field_validator("api_token", "read_token", "metrics_token", "nats_token")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        """A token travels in a header: visible ASCII only (never echoed)."""
        if value is not None and not _VISIBLE_ASCII.fullmatch(value.get_secret_value()):
            raise ValueError("use visible ASCII characters only, no spaces")
        return value

    @field_validator(
        "nats_credentials",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
    )
    @classmethod
    def _readable_file(cls, value: Path | str | None) -> Path | str | None:
        """A file the client reads when it connects: there, and a file."""
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _kafka_bootstrap_addresses(self) -> Settings:
        """On Kafka, every comma-separated entry of `kafka_bootstrap` is `host` or `host:port`
        (port 1..65535), and there is at least one; empty entries are skipped, as by the
        client. Left alone on NATS, where nothing reads it."""
        if self.broker != "kafka":
            return self
        entries = comma_separated(self.kafka_bootstrap)
        for entry in entries:
            address = _BOOTSTRAP_ADDRESS.fullmatch(entry)
            port = address.group(1) if address else None
            if address is None or (port is not None and not 1 <= int(port) <= 65535):
                raise ValueError(
                    f"MSC_KAFKA_BOOTSTRAP: {entry!r} is not host:port "
                    "(give host:port, comma-separated)"
                )
        if not entries:
            raise ValueError("MSC_KAFKA_BOOTSTRAP: no address (give host:port, comma-separated)")
        return self

    def api_token_value(self) -> str | None:
        """The write token, or None when commands are open."""
        return _revealed(self.api_token)

    def read_token_value(self) -> str | None:
        """The read token, or None when reads are open."""
        return _revealed(self.read_token)

    def metrics_token_value(self) -> str | None:
        """The metrics token, or None when `/metrics` is open."""
        return _revealed(self.metrics_token)

    def client_read_token(self) -> str | None:
        """The token a client of the services sends on reads: the read token, else the write
        token (the services accept it for reads too), else None."""
        return self.read_token_value() or self.api_token_value()

    def cart_store(self) -> str:
        """The cart service's base URL as billing reaches it: `MSC_CART_STORE_URL`, else
        `MSC_CART_URL`."""
        return self.cart_store_url or self.cart_url

    def instance(self) -> str:
        """This instance's id: `MSC_INSTANCE_ID`, else `<hostname>-<pid>`."""
        return self.instance_id or default_instance_id()

    def nats_servers(self) -> list[str]:
        """The NATS server URLs: `MSC_NATS_URL` may list several, comma-separated."""
        return comma_separated(self.nats_url)

    def billing_db_url(self) -> str:
        """The billing database's URL: `MSC_BILLING_DATABASE_URL`, else `<data_dir>/billing.db`."""
        return self.billing_database_url or f"sqlite:///{self.data_dir / 'billing.db'}"

    def cart_database_url(self) -> str:
        """The cart event store's URL: `MSC_DATABASE_URL`, else `<data_dir>/events.db`."""
        return self.database_url or f"sqlite:///{self.data_dir / 'events.db'}"


def comma_separated(value: str) -> list[str]:
    """The entries of a comma-separated setting, trimmed; empty ones skipped."""
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def _revealed(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret else None
