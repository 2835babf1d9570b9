"""The cart's application service: load → decide → append with the expected version."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from microservice_connector import tracing
from microservice_connector.cart_service.application.cart_cache import CartCache
from microservice_connector.cart_service.application.cart_snapshots import (
    CartSnapshots,
    SnapshotRead,
)
from microservice_connector.cart_service.application.idempotency import pending_key
from microservice_connector.cart_service.application.keyed_locks import KeyedLocks
from microservice_connector.cart_service.application.observer import (
    CommandObserver,
    NoObserver,
)
from microservice_connector.cart_service.application.ports import AsyncEventStore, CartStateCodec
from microservice_connector.cart_service.domain import (
    CartRuleViolation,
    InvalidCommand,
    ShoppingCart,
)
from microservice_connector.events.cart import CartEvent
from microservice_connector.events.envelope import NewEvent, RecordedEvent
from microservice_connector.events.new_ids import new_event_id, new_id
from microservice_connector.events.registry import EventRegistry, default_registry
from microservice_connector.eventstore.errors import ConcurrencyError
from microservice_connector.eventstore.idempotency import IdempotencyKeyUsed
from microservice_connector.eventstore.port import AppendRequest, EventStore
from microservice_connector.eventstore.snapshot import Snapshot, SnapshotStore

AGGREGATE_TYPE = "ShoppingCart"
Clock = Callable[[], datetime]
Decision = Callable[[ShoppingCart, datetime], list[CartEvent]]


class CartNotFound(LookupError):
    """No event exists for this cart (or not at the version asked for)."""


class RetriesExhausted(Exception):
    """Concurrent writers kept winning the race for this cart; the command was not applied."""


def _outcome_of(exc: Exception) -> str:
    if isinstance(exc, CartRuleViolation):
        return "rejected"
    if isinstance(exc, InvalidCommand):
        return "invalid"
    if isinstance(exc, CartNotFound):
        return "not_found"
    if isinstance(exc, IdempotencyKeyUsed):
        return "replayed"  # applied before, under the same key: nothing done now
    return "conflict"


@dataclass(frozen=True, slots=True)
class CartView:
    """A cart as the outside world sees it, at one version."""

    cart_id: str
    version: int
    status: str
    items: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, cart: ShoppingCart) -> CartView:
        """A copy of the cart's state that later commands cannot change."""
        return cls(cart.cart_id, cart.version, cart.status, dict(cart.items))


class CartService:
    """Runs cart commands. Commands on one cart are serialised in this process; across
    processes the store's version guard decides, and the loser reloads and retries.
    `snapshots` (a store) comes with `snapshot_codec` (how a cart's state is stored in it);
    `save_snapshot` saves them instead of the store's own (blocking) `save_snapshot`."""

    def __init__(
        self,
        store: AsyncEventStore,
        *,
        registry: EventRegistry | None = None,
        clock: Clock = lambda: datetime.now(UTC),
        max_retries: int = 20,
        cache_size: int = 10_000,
        observer: CommandObserver | None = None,
        snapshots: SnapshotStore | None = None,
        snapshot_codec: CartStateCodec | None = None,
        snapshot_every: int = 100,
        save_snapshot: Callable[[Snapshot], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._observer = observer or NoObserver()
        self._registry = registry or default_registry()
        self._clock = clock
        self._max_retries = max_retries
        self._cache = CartCache(cache_size)
        self._locks = KeyedLocks()
        self._snapshots = CartSnapshots(
            snapshots, snapshot_codec, snapshot_every, clock, save_snapshot
        )

    async def add_item(
        self, cart_id: str, item_id: str, quantity: int, *, correlation_id: str | None = None
    ) -> CartView:
        """Add `quantity` of `item_id`; creates the cart on its first item."""
        decide: Decision = lambda cart, now: cart.add_item(item_id, quantity, now)  # noqa: E731
        return await self._execute("add_item", cart_id, decide, correlation_id, must_exist=False)

    async def remove_item(
        self,
        cart_id: str,
        item_id: str,
        quantity: int | None = None,
        *,
        correlation_id: str | None = None,
    ) -> CartView:
        """Remove `quantity` of `item_id`, or all of it when `quantity` is None."""
        decide: Decision = lambda cart, now: cart.remove_item(item_id, quantity, now)  # noqa: E731
        return await self._execute("remove_item", cart_id, decide, correlation_id)

    async def checkout(self, cart_id: str, *, correlation_id: str | None = None) -> CartView:
        """Check out the cart; afterwards it accepts no change."""
        return await self._execute(
            "checkout", cart_id, lambda cart, now: cart.checkout(now), correlation_id
        )

    async def get_cart(self, cart_id: str, version: int | None = None) -> CartView:
        """The cart now, or as it was right after its `version`-th event."""
        if version is None:
            cart = await self._current(cart_id, trust_cache=False)
        else:
            cart = await self._load(cart_id, to_version=version)
            if cart.version != version:
                raise CartNotFound(
                    f"cart {cart_id} has no version {version}"
                    if cart.exists
                    else f"cart {cart_id} not found"
                )
        if not cart.exists:
            raise CartNotFound(f"cart {cart_id} not found")
        return CartView.of(cart)

    async def cart_events(self, cart_id: str, after_version: int = 0) -> list[RecordedEvent]:
        """The cart's stored events after `after_version`, oldest first; `CartNotFound` if
        the cart has no event at all (an empty list if it has none after that version)."""
        recorded = await self._store.load(cart_id, after_version)
        if not recorded and (after_version == 0 or not await self._store.load(cart_id, 0, 1)):
            raise CartNotFound(f"cart {cart_id} not found")
        return recorded

    async def feed(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Up to `limit` events of every cart after `after_position`, by position."""
        return await self._store.read_all(after_position, limit)

    async def _execute(
        self,
        command: str,
        cart_id: str,
        decide: Decision,
        correlation_id: str | None,
        *,
        must_exist: bool = True,
    ) -> CartView:
        started = time.perf_counter()
        outcome = "error"
        try:
            view = await self._attempt(command, cart_id, decide, correlation_id, must_exist)
            outcome = "ok"
            return view
        except (
            CartRuleViolation,
            RetriesExhausted,
            InvalidCommand,
            CartNotFound,
            IdempotencyKeyUsed,
        ) as exc:
            outcome = _outcome_of(exc)
            raise
        finally:
            self._observer.command_finished(command, outcome, time.perf_counter() - started)

    async def _attempt(
        self,
        command: str,
        cart_id: str,
        decide: Decision,
        correlation_id: str | None,
        must_exist: bool,
    ) -> CartView:
        correlation_id = correlation_id or new_id()
        async with self._locks.hold(cart_id):
            for attempt in range(self._max_retries + 1):
                cart = await self._current(cart_id, trust_cache=attempt == 0)
                if must_exist and not cart.exists:
                    raise CartNotFound(f"cart {cart_id} not found")
                now = self._clock()
                with tracing.span("cart.decide", attributes={"cart.command": command}):
                    trace = tracing.current_trace()  # stored with the events, sent on by the relay
                    request = AppendRequest(
                        cart_id,
                        AGGREGATE_TYPE,
                        cart.version,
                        [
                            _new_event(self._registry, payload, now, correlation_id, trace)
                            for payload in decide(cart, now)
                        ],
                        idempotency=pending_key.get(),
                    )
                try:
                    with tracing.span("cart.append", attributes={"cart.version": cart.version}):
                        recorded = await self._store.append(request)
                except ConcurrencyError:
                    self._observer.conflict_retried(command)
                    self._cache.evict(cart_id)
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                for event in recorded:
                    cart.apply(self._decode(event))
                self._cache.put(cart)
                self._observer.events_appended(recorded)
                await self._snapshots.appended(cart, request.expected_version)
                return CartView.of(cart)
        raise RetriesExhausted(
            f"cart {cart_id} kept changing underneath; gave up after {self._max_retries} retries"
        )

    async def _current(self, cart_id: str, *, trust_cache: bool) -> ShoppingCart:
        cached = self._cache.get(cart_id)
        if cached is not None and trust_cache:
            return cached
        if cached is None:
            cart = await self._load(cart_id)
        else:  # catch up, on a copy, with what other processes may have appended
            cart = cached.copy()
            for event in await self._store.load(cart_id, after_version=cart.version):
                cart.apply(self._decode(event))
        if cart.exists:
            self._cache.put(cart)
        return cart

    async def _load(self, cart_id: str, to_version: int | None = None) -> ShoppingCart:
        """Its latest usable snapshot plus the events after it: what a full replay gives.
        Snapshot, tail and fold run in one worker-thread call, so a load costs one hand-off."""
        cart, read, replayed = await self._store.read(
            lambda store: self._load_now(store, cart_id, to_version)
        )
        self._snapshots.noted(cart_id, read)
        if to_version is None:
            self._snapshots.replayed(cart_id, replayed)
        return cart

    def _load_now(
        self, store: EventStore, cart_id: str, to_version: int | None
    ) -> tuple[ShoppingCart, SnapshotRead, int]:
        """On a worker thread: the cart, what its snapshot read found, and how many events
        were replayed on top of it."""
        read = self._snapshots.read(cart_id, to_version)
        if read.cart is None:
            recorded = store.load(cart_id, to_version=to_version)
            return self._replay(cart_id, recorded), read, len(recorded)
        cart = read.cart
        recorded = store.load(cart_id, after_version=cart.version, to_version=to_version)
        for event in recorded:
            cart.apply(self._decode(event))
        return cart, read, len(recorded)

    def _replay(self, cart_id: str, recorded: list[RecordedEvent]) -> ShoppingCart:
        return ShoppingCart.replay(cart_id, (self._decode(event) for event in recorded))

    def _decode(self, event: RecordedEvent) -> CartEvent:
        return cast(CartEvent, self._registry.decode(event))


def _new_event(
    registry: EventRegistry,
    payload: CartEvent,
    now: datetime,
    correlation_id: str,
    trace: Mapping[str, str],
) -> NewEvent:
    event_type, schema_version = registry.name_and_version(payload)
    return NewEvent(
        event_type=event_type,
        payload=payload,
        timestamp=now,
        schema_version=schema_version,
        correlation_id=correlation_id,
        causation_id=correlation_id,
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
        event_id=new_event_id(),
    )
