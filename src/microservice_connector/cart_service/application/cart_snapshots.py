"""Cart snapshots: restore a cart from its latest snapshot, take a new one every N events."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from microservice_connector.cart_service.application.ports import (
    CartState,
    CartStateCodec,
    UnreadableCartState,
)
from microservice_connector.cart_service.domain import ShoppingCart
from microservice_connector.eventstore.snapshot import Snapshot, SnapshotStore

AGGREGATE_TYPE = "ShoppingCart"
# The shape of `CartState` as the codec stores it. Change it whenever that shape changes:
# older snapshots are then ignored (the cart is replayed from its events) and replaced on the
# cart's next write.
SNAPSHOT_SCHEMA_VERSION = 1
_MAX_DUE = 10_000

log = logging.getLogger(__name__)


def snapshot_of(cart: ShoppingCart, taken_at: datetime, codec: CartStateCodec) -> Snapshot:
    """A snapshot of `cart` as it is now, its state encoded by `codec`."""
    return Snapshot(
        aggregate_id=cart.cart_id,
        aggregate_type=AGGREGATE_TYPE,
        version=cart.version,
        state=codec.encode(CartState(cart.status, cart.items)),
        schema_version=SNAPSHOT_SCHEMA_VERSION,
        taken_at=taken_at,
    )


def cart_from(snapshot: Snapshot, codec: CartStateCodec) -> ShoppingCart | None:
    """The cart the snapshot holds, or None if it is in another shape or `codec` cannot
    read it."""
    if (
        snapshot.schema_version != SNAPSHOT_SCHEMA_VERSION
        or snapshot.aggregate_type != AGGREGATE_TYPE
    ):
        return None
    try:
        state = codec.decode(snapshot.state)
    except UnreadableCartState:
        return None
    return ShoppingCart.from_state(
        snapshot.aggregate_id, snapshot.version, state.status, state.items
    )


@dataclass(frozen=True, slots=True)
class SnapshotRead:
    """What reading a cart's snapshot found: the cart (None: replay from the start), whether
    a snapshot was there but unusable (`stale`), and the error if the store failed."""

    cart: ShoppingCart | None
    stale: bool = False
    error: Exception | None = None


class CartSnapshots:
    """Snapshots every `every` events (0 or no store: never), their state encoded by `codec`.
    A snapshot that cannot be read or is in an old shape is ignored and replaced on the cart's
    next write; a failing snapshot store costs speed and a log line, never a command. A store
    without a codec is refused (`ValueError`). Snapshots are saved by `save` when given (the
    event store's writer, after its next commit), else by `store.save_snapshot` on a worker
    thread."""

    def __init__(
        self,
        store: SnapshotStore | None,
        codec: CartStateCodec | None,
        every: int,
        clock: Callable[[], datetime],
        save: Callable[[Snapshot], Awaitable[None]] | None = None,
    ) -> None:
        if store is not None and codec is None:
            raise ValueError("a snapshot store needs a codec for the cart state it holds")
        # Where snapshots are kept and how their state is encoded; None: snapshots are off.
        self._storage: tuple[SnapshotStore, CartStateCodec] | None = None
        if store is not None and codec is not None and every > 0:
            self._storage = (store, codec)
        self._save = save
        self._every = every
        self._clock = clock
        self._due: OrderedDict[str, None] = OrderedDict()  # carts to snapshot on next write
        self.failures = 0

    def read(self, cart_id: str, to_version: int | None = None) -> SnapshotRead:
        """The cart from its snapshot, if one exists at or before `to_version`. Changes
        nothing here, so any thread may call it; hand the result to `noted` afterwards."""
        if self._storage is None:
            return SnapshotRead(None)
        store, codec = self._storage
        try:
            snapshot = store.load_snapshot(cart_id)
        except Exception as exc:
            return SnapshotRead(None, error=exc)
        if snapshot is None:
            return SnapshotRead(None)
        cart = cart_from(snapshot, codec)
        if cart is None:
            return SnapshotRead(None, stale=True)
        if to_version is not None and cart.version > to_version:
            return SnapshotRead(None)
        return SnapshotRead(cart)

    def noted(self, cart_id: str, read: SnapshotRead) -> None:
        """Act on what `read` found: log a failure, plan a new snapshot for a stale one."""
        if read.error is not None:
            self._failed("load", cart_id, read.error)
        if read.stale:
            self._mark_due(cart_id)

    def replayed(self, cart_id: str, events: int) -> None:
        """Note that loading the cart replayed `events` events after its snapshot (if any)."""
        if self._storage is not None and events >= self._every:
            self._mark_due(cart_id)

    async def appended(self, cart: ShoppingCart, previous_version: int) -> None:
        """Take a snapshot of `cart`, just appended to, if it is due; never raises."""
        if self._storage is None:
            return
        store, codec = self._storage
        crossed = cart.version // self._every > previous_version // self._every
        if not crossed and cart.cart_id not in self._due:
            return
        snapshot = snapshot_of(cart, self._clock(), codec)
        try:
            if self._save is not None:
                await self._save(snapshot)
            else:
                await asyncio.to_thread(store.save_snapshot, snapshot)
        except Exception as exc:
            self._failed("save", cart.cart_id, exc)
            self._mark_due(cart.cart_id)
        else:
            self._due.pop(cart.cart_id, None)

    def _mark_due(self, cart_id: str) -> None:
        self._due[cart_id] = None
        self._due.move_to_end(cart_id)
        while len(self._due) > _MAX_DUE:
            self._due.popitem(last=False)

    def _failed(self, action: str, cart_id: str, exc: Exception) -> None:
        self.failures += 1
        log.warning("cart %s: cannot %s its snapshot (%s); commands go on", cart_id, action, exc)
