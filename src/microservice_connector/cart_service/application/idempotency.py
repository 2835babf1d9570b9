"""Commands safe to retry (IETF HTTPAPI draft "The Idempotency-Key HTTP Header Field"): a
command carrying a key is applied at most once, and a repeat gets the first answer again.

The key is recorded in the transaction of the command's events, so it exists exactly when
the command was applied. A successful command's answer is the cart right after it, which
the events reproduce: the record keeps the cart's id and version, not the answer. A command
that failed wrote nothing, the key included: its repeat runs again (and may now succeed).

The key travels to the store with the request's context (`pending_key`), as a trace
context would, so the command lanes need not know of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.idempotency import IdempotencyKey, RecordedKey

if TYPE_CHECKING:  # cart_service imports `pending_key` from here
    from microservice_connector.cart_service.application.cart_service import CartView

log = logging.getLogger(__name__)
_REUSED = "this Idempotency-Key was used with a different request; use a fresh key"

# The key of the command running in this context; `CartService` appends with it.
pending_key: ContextVar[IdempotencyKey | None] = ContextVar("pending_key", default=None)


class KeyInFlight(Exception):
    """A request with this key is still running in this process: retry it later (409)."""


class KeyReused(Exception):
    """The key was used with a different request; it cannot name this one (422)."""


class KeyStore(Protocol):
    """Where the keys that appends recorded can be read and purged (blocking calls)."""

    def find(self, key: str) -> RecordedKey | None:
        """The unexpired record of `key`, or None."""
        ...

    def purge_expired(self) -> int:
        """Delete expired records; how many."""
        ...


CartAt = Callable[[str, int], Awaitable["CartView"]]


class IdempotentCommands:
    """Claims keys for running commands and answers repeats from their records."""

    def __init__(
        self,
        keys: KeyStore,
        cart_at: CartAt,
        *,
        ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self._keys = keys
        self._cart_at = cart_at
        self._ttl = ttl
        self._in_flight: dict[str, str] = {}  # key: fingerprint of its running request

    @contextlib.contextmanager
    def running(self, key: str, fingerprint: str) -> Iterator[None]:
        """Run the block as the command of `key`: appends in it record the key. Raises
        `KeyInFlight` if the key's command is still running here, `KeyReused` if another
        request with the key is."""
        running = self._in_flight.get(key)
        if running == fingerprint:
            raise KeyInFlight(
                "a request with this Idempotency-Key is still being processed; retry later"
            )
        if running is not None:
            raise KeyReused(_REUSED)
        self._in_flight[key] = fingerprint
        token = pending_key.set(IdempotencyKey(key, fingerprint, self._ttl))
        try:
            yield
        finally:
            pending_key.reset(token)
            del self._in_flight[key]

    async def recorded(self, key: str) -> RecordedKey | None:
        """The unexpired record of `key`, or None; `DatabaseUnavailable` if the store cannot
        tell now (then nobody knows whether the key's command was applied before)."""
        return await asyncio.to_thread(self._keys.find, key)

    async def first_answer(self, record: RecordedKey, fingerprint: str) -> CartView:
        """The cart as the key's command left it; `KeyReused` if the request differs."""
        if record.fingerprint != fingerprint:
            raise KeyReused(_REUSED)
        return await self._cart_at(record.aggregate_id, record.version)

    async def purge_until_stopped(self, stop: asyncio.Event, every: float) -> None:
        """Delete expired keys every `every` seconds until `stop` is set."""
        while not stop.is_set():
            try:
                purged = await asyncio.to_thread(self._keys.purge_expired)
            except DatabaseUnavailable as exc:
                log.warning("cannot purge expired idempotency keys: %s", exc)
            else:
                if purged:
                    log.info("purged %d expired idempotency keys", purged)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
