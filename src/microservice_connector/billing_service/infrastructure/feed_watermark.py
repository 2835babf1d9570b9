"""How far the broker has brought the cart feed without a hole: feed catch-up starts its
rounds there, so that while the broker loses nothing, a round reads only the feed's newest
entries instead of everything billing already applied."""

from __future__ import annotations

from collections.abc import Iterable

MAX_AHEAD = 100_000  # positions held past a hole; beyond that they are dropped


class FeedWatermark:
    """`through`: every cart feed position up to it is applied, its bill committed at or past
    the event (by the broker's deliveries, or by catch-up up to where its round ended).
    Positions handled past a hole are held until the hole is filled or catch-up passes it;
    more than `max_ahead` of them are dropped, which only costs catch-up a longer read. In
    memory only: after a restart catch-up starts from its saved position, as it did before."""

    def __init__(self, max_ahead: int = MAX_AHEAD) -> None:
        self._through = 0
        self._ahead: set[int] = set()
        self._max_ahead = max_ahead

    @property
    def through(self) -> int:
        """The position up to which every event is applied (0: none known yet)."""
        return self._through

    def handled(self, positions: Iterable[int]) -> None:
        """The events at `positions` are applied, their bills committed."""
        self._ahead.update(position for position in positions if position > self._through)
        self._advance()
        if len(self._ahead) > self._max_ahead:
            self._ahead.clear()

    def caught_up_to(self, position: int) -> None:
        """Catch-up has applied everything up to `position`."""
        if position > self._through:
            self._through = position
            self._ahead = {ahead for ahead in self._ahead if ahead > position}
            self._advance()

    def _advance(self) -> None:
        while self._through + 1 in self._ahead:
            self._through += 1
            self._ahead.discard(self._through)
