"""What the cart service reports as it works; metrics implement it, tests may fake it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from microservice_connector.events.envelope import RecordedEvent


class CommandObserver(Protocol):
    """Told about every command; must be cheap and must not raise."""

    def command_finished(self, command: str, outcome: str, seconds: float) -> None:
        """`command` (add_item, remove_item, checkout) ended with `outcome` (ok, rejected,
        invalid, not_found, conflict, error) after `seconds`."""
        ...

    def conflict_retried(self, command: str) -> None:
        """A concurrent writer won the race; the command reloads and tries again."""
        ...

    def events_appended(self, events: Sequence[RecordedEvent]) -> None:
        """These events were committed."""
        ...


class NoObserver:
    """Reports nothing."""

    def command_finished(self, command: str, outcome: str, seconds: float) -> None:
        """Ignore."""

    def conflict_retried(self, command: str) -> None:
        """Ignore."""

    def events_appended(self, events: Sequence[RecordedEvent]) -> None:
        """Ignore."""
