"""Feed catch-up: billing follows the cart store's global feed (`GET /events?after=P`) and
applies whatever the broker never brought, so a bill converges even when the event the
broker lost was its cart's last and no later event ever shows the gap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta

from microservice_connector.billing_service.application import ConcurrentBillUpdate, Outcome
from microservice_connector.billing_service.infrastructure.cart_messages import stated_version
from microservice_connector.billing_service.infrastructure.cart_store import (
    BadStoreAnswer,
    CartStore,
    CartStoreUnreachable,
    FeedEntry,
)
from microservice_connector.billing_service.infrastructure.feed_watermark import FeedWatermark
from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog
from microservice_connector.billing_service.infrastructure.store_events import StoreEventApplier
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.messaging.ports import DeadLetters, put_dead_letter
from microservice_connector.runtime.background import until_stopped

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
PAGE = 500
BROKER_WAIT_S = 10.0  # for the dead-letter store, before the round pauses
_TRANSIENT = (DatabaseUnavailable, ConcurrentBillUpdate, CartStoreUnreachable)


class CatchUpPaused(Exception):
    """This round stops here, its position saved up to the last event handled: the store,
    the database or the dead-letter store is away for now. The next round goes on."""


class FeedCatchUp:
    """Applies every feed event older than `settle_s` (younger ones are the broker's to bring:
    the fast path), saving the feed position in the same transaction as the bills, every
    `interval_s` from the start. Events whose carts' bills are already past them
    (`applied_versions`, read beside the writer) are passed over without a transaction, so a
    round over events billing already has costs its reads and one small write at its end.
    With `watermark`, a round starts where the broker's deliveries leave no hole, if that
    is past the saved position, so it reads only what the broker may have lost.
    An event that fails for good is dead-lettered with its error and passed."""

    def __init__(
        self,
        applier: StoreEventApplier,
        store: CartStore,
        position: Callable[[], int],
        dead_letters: Callable[[], Awaitable[DeadLetters]],
        handled: HandlingLog,
        applied_versions: Callable[[Collection[str]], dict[str, int]],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        settle_s: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        watermark: FeedWatermark | None = None,
    ) -> None:
        self._applier = applier
        self._store = store
        self._position = position
        self._dead_letters = dead_letters
        self._handled = handled
        self._applied_versions = applied_versions
        self._interval_s = interval_s
        self._settle = timedelta(seconds=settle_s)
        self._clock = clock
        self._watermark = watermark or FeedWatermark()

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up every `interval_s` until `stop`, the first round one interval after the
        start: a restarted billing's broker backlog is the fast path's to drain first."""
        await until_stopped(asyncio.sleep(self._interval_s), stop)
        paused = False  # said once, not every round, while the cart service is away
        while not stop.is_set():
            try:
                applied = await until_stopped(self.catch_up(), stop)
                if paused or applied:
                    log.info("billing: feed catch-up applied %d events", applied or 0)
                paused = False
            except CatchUpPaused as exc:
                if not paused:
                    log.warning("billing: feed catch-up paused (retried quietly): %s", exc)
                paused = True
            except Exception:  # a bug must not end the loop: the bills depend on it
                log.exception("billing: feed catch-up failed")
            await until_stopped(asyncio.sleep(self._interval_s), stop)

    async def catch_up(self) -> int:
        """One round: follow the feed to its settled end; the number of events applied.
        `CatchUpPaused` when something it needs is away."""
        try:
            saved = await asyncio.to_thread(self._position)
        except DatabaseUnavailable as exc:
            raise CatchUpPaused(str(exc)) from exc
        # Up to the watermark the broker brought every event and billing applied it.
        applied, after = 0, max(saved, self._watermark.through)
        try:
            while True:
                try:
                    page = await self._store.feed(after, PAGE)
                except (CartStoreUnreachable, BadStoreAnswer) as exc:
                    raise CatchUpPaused(str(exc)) from exc
                horizon = self._clock() - self._settle
                settled = page.entries[: _first_unsettled(page.entries, horizon)]
                if settled:
                    missing = await self._not_yet_applied(settled)
                    if missing:
                        applied += await self._apply(missing, settled[-1].position)
                        saved = missing[-1].position  # at least: one at a time saves less
                    after = settled[-1].position
                if len(settled) < PAGE:
                    return applied
        finally:
            if after > saved:  # pages passed over: their end is saved once, here
                with contextlib.suppress(*_TRANSIENT):
                    await self._applier.apply([], "catch-up", feed_position=after)
            self._watermark.caught_up_to(after)

    async def _not_yet_applied(self, entries: list[FeedEntry]) -> list[FeedEntry]:
        """The entries whose cart's bill is not yet at their version, as committed now
        (whether billing can read them is found out for these only)."""
        carts = {entry.cart_id for entry in entries}
        try:
            versions = await asyncio.to_thread(self._applied_versions, carts)
        except DatabaseUnavailable as exc:
            raise CatchUpPaused(str(exc)) from exc
        return [entry for entry in entries if entry.version > versions.get(entry.cart_id, 0)]

    async def _apply(self, entries: list[FeedEntry], through: int) -> int:
        """Apply `entries` in one transaction with the feed position `through` (what the page
        passed over is applied already); if that fails for good, one at a time."""
        if all(entry.event is not None for entry in entries):
            try:
                return await self._apply_one_transaction(entries, through)
            except _TRANSIENT as exc:
                raise CatchUpPaused(str(exc)) from exc
            except Exception:
                log.warning("billing: a feed page failed; applying its events one at a time")
        applied = 0
        for entry in entries:
            try:
                applied += await self._apply_alone(entry)
            except _TRANSIENT as exc:
                raise CatchUpPaused(str(exc)) from exc
        return applied

    async def _apply_one_transaction(self, entries: list[FeedEntry], through: int) -> int:
        events = [entry.event for entry in entries if entry.event is not None]
        outcomes = await self._applier.apply(events, "catch-up", feed_position=through)
        return sum(outcome is Outcome.APPLIED for outcome in outcomes)

    async def _apply_alone(self, entry: FeedEntry) -> int:
        """Apply one entry with its position, or dead-letter it and move the position past."""
        problem = entry.problem
        if entry.event is not None:
            try:
                return await self._apply_one_transaction([entry], entry.position)
            except _TRANSIENT:
                raise
            except Exception as exc:  # DataRejected and the like: it fails the same way again
                log.exception("billing: feed event %s failed for good", entry.message.id)
                problem = f"billing could not apply it from the feed: {exc}"
        error = problem or "billing could not apply it from the feed"
        try:
            dead_letters = await asyncio.wait_for(self._dead_letters(), BROKER_WAIT_S)
            error = await put_dead_letter(dead_letters, entry.message, error)
        except Exception as exc:
            raise CatchUpPaused(f"cannot dead-letter {entry.message.id}: {exc}") from exc
        self._handled.record(
            entry.message.id,
            entry.message.headers.get("aggregate-id", ""),
            stated_version(entry.message),
            "rejected",
            error,
            via="catch-up",
        )
        await self._applier.apply([], "catch-up", feed_position=entry.position)
        return 0


def _first_unsettled(entries: list[FeedEntry], horizon: datetime) -> int:
    """How many entries come before the first one younger than `horizon`: the feed is in
    position order, not time order, so catch-up stops at the first young one."""
    for index, entry in enumerate(entries):
        if entry.timestamp > horizon:
            return index
    return len(entries)
