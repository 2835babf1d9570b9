"""The relay's audit of its broker: does it still hold what it acknowledged? What it lost is
made pending again in the outbox, so the relay publishes it again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from microservice_connector.eventstore.outbox import SqlOutbox
from microservice_connector.messaging.holdings import BrokerHoldings, Holding

log = logging.getLogger(__name__)
REARM_CHUNK = 5_000  # rows per transaction, so a large loss never holds the writer long

LossKind = Literal["tail_lost", "recreated", "sequence_reused"]


@dataclass(frozen=True, slots=True)
class BrokerLoss:
    """The broker lost messages it had acknowledged on one log of `topic`: its `tail_lost`
    (its last sequence went below what the outbox recorded), it was `recreated` (created
    after rows were acknowledged), or it acknowledged a new message at a `sequence_reused`
    (one it had given before); `rearmed` outbox rows are pending again."""

    topic: str
    kind: LossKind
    rearmed: int
    detail: str


class AuditObserver(Protocol):
    """Told of every loss found; metrics implement it. Must be cheap and must not raise."""

    def broker_lost(self, loss: BrokerLoss) -> None:
        """The broker lost `loss.rearmed` acknowledged rows of `loss.topic`."""
        ...


class BrokerAudit:
    """Compares, per log of each topic, the broker's holdings with the outbox's record of
    acknowledgements (`broker_sequence`, `published_at`), and re-arms what is missing:

    - rows whose sequence is above the log's last one, marked before the broker was read
      (the tail was lost: an OS crash before JetStream's fsync, Tansu restarted empty);
    - rows marked before the log was created (a JetStream stream deleted, or its store
      thrown away, and made again): its sequences start over, so none of them is in it;
    - rows marked before a publish round whose new messages the broker stored at sequences
      no higher than theirs (`acknowledged`): it went back, and reuses the sequences of what
      it lost. This catches a loss that new publishes would hide from the first two checks
      (the log growing past its old last sequence before the next check).

    Re-armed rows keep their id: a stream made again, or one recovered from disk, does not
    remember their ids, so its duplicate window does not drop them.
    """

    def __init__(
        self,
        outbox: SqlOutbox,
        holdings: BrokerHoldings,
        topics: Sequence[str],
        *,
        observer: AuditObserver | None = None,
        chunk: int = REARM_CHUNK,
    ) -> None:
        self._outbox = outbox
        self._holdings = holdings
        self._topics = list(topics)
        self._observer = observer
        self._chunk = chunk
        self._logs: dict[str, list[Holding]] = {}  # per topic, as last read
        # Per log (topic, first sequence): the highest sequence acknowledged to this relay,
        # or recorded in the outbox when it started; and the log's creation time.
        self._highest: dict[tuple[str, int], int] = {}
        self._created: dict[tuple[str, int], datetime] = {}

    async def check(self) -> list[BrokerLoss]:
        """Audit every topic once; raises `ConnectionError` while the broker is unreachable
        and `DatabaseUnavailable` while the outbox is. The outbox is searched only on the
        first check and when a log's creation time changed; later checks compare the
        broker's last sequences with the highest this relay has seen acknowledged."""
        losses: list[BrokerLoss] = []
        for topic in self._topics:
            read_at = datetime.now(UTC)  # before the read: rows marked later may be newer
            self._logs[topic] = await self._holdings.holdings(topic)
            for holding in self._logs[topic]:
                losses += await self._check_log(topic, holding, read_at)
        self._report(losses)
        return losses

    async def acknowledged(
        self, sequences: Sequence[tuple[str, int]], round_started: datetime
    ) -> list[BrokerLoss]:
        """Check the (topic, sequence) of each message a round stored anew (not a duplicate):
        a sequence no higher than one seen before on its log means the broker lost those,
        and the rows marked before `round_started` at or above it are re-armed. Costs no
        query unless a sequence went back; knows the logs only after a first `check`."""
        stored: dict[tuple[str, int], list[int]] = {}  # per log, the sequences it gave now
        logs: dict[tuple[str, int], Holding] = {}
        for topic, sequence in sequences:
            holding = next((h for h in self._logs.get(topic, ()) if h.holds(sequence)), None)
            if holding is not None:
                logs[(topic, holding.first)] = holding
                stored.setdefault((topic, holding.first), []).append(sequence)
        losses: list[BrokerLoss] = []
        for key, given in stored.items():
            low, high = min(given), max(given)
            seen = self._highest.get(key, low - 1)
            self._highest[key] = high if low <= seen else max(seen, high)
            if low > seen:
                continue
            topic, holding = key[0], logs[key]
            rearmed = await self._rearm(topic, low, holding.limit, round_started)
            if rearmed:
                detail = f"it stored a new message at {low}, having acknowledged up to {seen}"
                losses.append(BrokerLoss(topic, "sequence_reused", rearmed, detail))
        self._report(losses)
        return losses

    def _report(self, losses: list[BrokerLoss]) -> None:
        for loss in losses:
            log.warning(
                "broker lost %d acknowledged rows of %s (%s: %s); publishing them again",
                loss.rearmed,
                loss.topic,
                loss.kind,
                loss.detail,
            )
            if self._observer is not None:
                self._observer.broker_lost(loss)

    async def _check_log(self, topic: str, holding: Holding, read_at: datetime) -> list[BrokerLoss]:
        key = (topic, holding.first)
        losses: list[BrokerLoss] = []
        created = holding.created
        if created is not None and self._created.get(key) != created:
            self._created[key] = created
            rearmed = await self._rearm(topic, holding.first, holding.limit, created)
            if rearmed:
                detail = f"the log was created at {created.isoformat()}"
                losses.append(BrokerLoss(topic, "recreated", rearmed, detail))
        highest = self._highest.get(key)
        if highest is None:  # first look: what the outbox recorded, from any relay
            highest = await asyncio.to_thread(
                self._outbox.highest_sequence, topic, holding.first, holding.limit
            )
        if highest is not None and highest > holding.last:
            rearmed = await self._rearm(topic, holding.last + 1, holding.limit, read_at)
            if rearmed:
                detail = f"it holds up to sequence {holding.last}, it had acknowledged {highest}"
                losses.append(BrokerLoss(topic, "tail_lost", rearmed, detail))
        if losses:
            self._highest[key] = holding.last  # what was above it is pending again
        else:
            self._highest[key] = max(self._highest.get(key, 0), highest or 0)
        return losses

    async def _rearm(self, topic: str, first: int, limit: int, before: datetime) -> int:
        """Re-arm in chunks, logging progress of a large loss."""
        total = 0
        while True:
            count = await asyncio.to_thread(
                self._outbox.rearm, topic, first, limit, before, chunk=self._chunk
            )
            total += count
            if count < self._chunk:
                return total
            log.info("re-armed %d rows of %s so far", total, topic)
