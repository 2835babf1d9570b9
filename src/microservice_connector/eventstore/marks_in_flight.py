"""Which outbox rows a relay must not claim again: those the broker acknowledged and whose
mark is still on its way to the database, and, for a claim that began before a mark landed,
those too (its read may predate the mark)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from microservice_connector.eventstore.outbox import IdSpan


class MarksInFlight:
    """The rows of marks started and not yet landed, and of marks that landed since a claim
    began. Use: `seen = begin_claim()`, read the pending rows, `claimable(rows, seen)`; around
    each mark, `started(ids)` and then `landed(ids)` with the same ids (also when the mark
    failed). A claim skips `spans_on_the_way()` in its read, one span per mark from its lowest
    id to its highest, so it neither reads nor leases those rows again; a row between them
    that the mark does not hold (the broker failed it) waits for that mark to land too."""

    def __init__(self) -> None:
        self._on_the_way: set[int] = set()
        self._spans: list[IdSpan] = []  # one per mark on its way
        self._landed: dict[int, int] = {}  # row id -> the landing that marked it
        self._landings = 0

    def spans_on_the_way(self) -> list[IdSpan]:
        """The rows waiting for their marks, one span per mark, for a claim to skip."""
        return list(self._spans)

    def begin_claim(self) -> int:
        """How many marks have landed so far: what a claim starting now sees."""
        return self._landings

    def claimable(self, row_ids: Iterable[int], seen: int) -> list[int]:
        """Those of `row_ids` (read by a claim that began having seen `seen` landings) that
        may be published: not on the way to their mark, nor marked since that claim began."""
        may = [
            row_id
            for row_id in row_ids
            if row_id not in self._on_the_way and self._landed.get(row_id, 0) <= seen
        ]
        # No later claim can have begun before these landings: they need no keeping.
        self._landed = {row_id: n for row_id, n in self._landed.items() if n > seen}
        return may

    def started(self, row_ids: Sequence[int]) -> None:
        """A mark of `row_ids` is on its way."""
        self._on_the_way.update(row_ids)
        if row_ids:
            self._spans.append((min(row_ids), max(row_ids)))

    def landed(self, row_ids: Sequence[int]) -> None:
        """The mark of `row_ids` landed, or failed (the rows are then pending again)."""
        self._on_the_way.difference_update(row_ids)
        if row_ids and (span := (min(row_ids), max(row_ids))) in self._spans:
            self._spans.remove(span)  # not there when the ids were never `started`
        self._landings += 1
        self._landed.update(dict.fromkeys(row_ids, self._landings))
