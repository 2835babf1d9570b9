"""The NATS connection: reconnects forever, and the JetStream streams the project uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import BadRequestError, NotFoundError

log = logging.getLogger(__name__)

# The streams of DESIGN §3.3: name -> subjects.
PROJECT_STREAMS: Mapping[str, tuple[str, ...]] = {
    "CART": ("cart.events",),
    "BILLING": ("billing.events",),
    "DEADLETTER": ("deadletter.>",),
}

CLOSE_TIMEOUT_S = 2.0
UNREACHABLE_WARNING_EVERY_S = 30.0  # while no server has answered yet
MSG_ID_HEADER = "Nats-Msg-Id"  # the header JetStream dedupes on: the message id
_STREAM_NAME_IN_USE = 10058  # JetStream: "stream name already in use with a different config"

ErrorCallback = Callable[[Exception], Awaitable[None]]
Callback = Callable[[], Awaitable[None]]


class BrokerUnavailable(ConnectionError):
    """The broker did not answer or refused the request; retrying later may succeed."""


class BrokerRefusedCredentials(PermissionError):
    """The broker refused the connection's credentials; retrying will not help."""


class _TlsOrNothing(Client):
    """nats-py's client, which, given a TLS context, refuses a server that does not ask for
    TLS instead of going on in plain text: nats-py upgrades only when the server's INFO says
    `tls_required`, and would otherwise send CONNECT (credentials included) in the clear.
    (`_process_info` is nats-py's, not its documented API: it runs on each INFO, before
    CONNECT is written.)"""

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if (
            initial_connection
            and self.options.get("tls") is not None
            and not info.get("tls_required")
            and self._current_server is not None
            and self._current_server.uri.scheme != "wss"
        ):
            raise ssl.SSLError(
                f"the server at {self._current_server.uri.netloc.rsplit('@', 1)[-1]} does not "
                "offer TLS, which MSC_NATS_TLS* asks for; nothing was sent to it"
            )
        await super()._process_info(info, initial_connection)


async def connect_nats(servers: Sequence[str], *, name: str, **options: Any) -> Client:
    """A client that retries until a server answers, then reconnects forever after losses.

    Waits (without limit) for a server to come up, so a service may start before its broker;
    bound it with `asyncio.wait_for` if needed. Refused credentials raise
    `BrokerRefusedCredentials` at once, a failed TLS handshake (an untrusted or misnamed
    server certificate, or, given `tls`, a server that does not offer TLS) `BrokerUnavailable`
    saying why. `options` go to
    `nats.aio.client.Client.connect` (`user`, `password`, `token`, `user_credentials`, `tls`,
    callbacks…) and override the defaults here.
    """
    urls = [servers] if isinstance(servers, str) else list(servers)
    client = _TlsOrNothing()
    connected = False
    refused: list[Exception] = []
    user_error_cb: ErrorCallback | None = options.pop("error_cb", None)
    user_disconnected_cb: Callback | None = options.pop("disconnected_cb", None)
    user_reconnected_cb: Callback | None = options.pop("reconnected_cb", None)

    warned_at = -UNREACHABLE_WARNING_EVERY_S

    async def on_error(exc: Exception) -> None:
        nonlocal warned_at
        if not connected and (_is_refused_credentials(exc) or isinstance(exc, ssl.SSLError)):
            refused.append(exc)
            # nats-py re-reads this option after each failed attempt: stop retrying (after a
            # failed TLS handshake it would otherwise stall, silently).
            client.options["allow_reconnect"] = False
        elif not connected and time.monotonic() - warned_at >= UNREACHABLE_WARNING_EVERY_S:
            warned_at = time.monotonic()  # once in a while, not at every attempt
            log.warning("nats %s: no server reached yet (%s); still trying", name, exc)
        else:
            log.debug("nats %s: %s", name, exc)
        if user_error_cb is not None:
            await user_error_cb(exc)

    async def on_disconnected() -> None:
        if connected and not client.is_closed:
            log.warning("nats %s: disconnected; reconnecting", name)
        if user_disconnected_cb is not None:
            await user_disconnected_cb()

    async def on_reconnected() -> None:
        log.info("nats %s: reconnected to %s", name, client.connected_url)
        if user_reconnected_cb is not None:
            await user_reconnected_cb()

    settings: dict[str, Any] = {
        "name": name,
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        **options,
    }
    try:
        await client.connect(urls, **settings)
    except Exception as exc:
        # After a failed TLS upgrade nats-py's close() waits forever for the socket to close.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S)
        if refused and isinstance(refused[0], ssl.SSLError):
            raise BrokerUnavailable(
                f"TLS handshake of {name} with NATS failed: {refused[0]}"
            ) from exc
        if refused:
            raise BrokerRefusedCredentials(
                f"NATS refused the credentials of {name}: {exc}"
            ) from exc
        shown = [url.rsplit("@", 1)[-1] for url in urls]  # never a password from a URL
        raise BrokerUnavailable(f"cannot connect {name} to NATS at {shown}: {exc}") from exc
    connected = True
    return client


def _is_refused_credentials(exc: Exception) -> bool:
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text


async def ensure_stream(
    js: JetStreamContext,
    name: str,
    subjects: Sequence[str],
    *,
    max_age: float | None = None,
    duplicate_window: float = 120.0,
    replicas: int = 1,
) -> StreamInfo:
    """The stream `name` holding exactly `subjects` with at least `replicas` copies: created
    (file storage), or updated if it holds other subjects or fewer copies (never lowered, so
    a client with the default does not shrink a cluster's streams). Idempotent, and safe to
    call from several processes at once; `max_age` and `duplicate_window` (seconds) apply
    when it is created. More than 1 replica needs a JetStream cluster of as many nodes."""
    wanted = list(subjects)
    for _ in range(3):  # another process may create it between our look and our create
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            config = StreamConfig(
                name=name,
                subjects=wanted,
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                max_age=max_age,
                duplicate_window=duplicate_window,
                num_replicas=replicas,
            )
            try:
                return await js.add_stream(config)
            except BadRequestError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise
                continue
        held = info.config.num_replicas or 1
        if sorted(info.config.subjects or []) == sorted(wanted) and held >= replicas:
            return info
        log.info(
            "stream %s: subjects %s -> %s, replicas %d -> %d",
            name,
            info.config.subjects,
            wanted,
            held,
            max(held, replicas),
        )
        changed = info.config.evolve(subjects=wanted, num_replicas=max(held, replicas))
        return await js.update_stream(changed)
    raise BrokerUnavailable(f"stream {name} keeps changing under us; gave up ensuring it")


def client_of(js: JetStreamContext) -> Client:
    """The connection a JetStream context talks through."""
    # nats-py keeps it private, but its own KV and object stores read it the same way.
    client: Client = js._nc
    return client
