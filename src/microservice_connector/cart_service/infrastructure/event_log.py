"""Logs every appended event with its ids, so one command can be followed to its invoice."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from microservice_connector.cart_service.application.observer import CommandObserver
from microservice_connector.events.envelope import RecordedEvent

log = logging.getLogger("microservice_connector.cart")


class LoggingObserver:
    """A `CommandObserver` that logs appended events and passes everything on to `inner`."""

    def __init__(self, inner: CommandObserver) -> None:
        self._inner = inner

    def command_finished(self, command: str, outcome: str, seconds: float) -> None:
        """Pass on."""
        self._inner.command_finished(command, outcome, seconds)

    def conflict_retried(self, command: str) -> None:
        """Pass on."""
        self._inner.conflict_retried(command)

    def events_appended(self, events: Sequence[RecordedEvent]) -> None:
        """Log each event with `event_id`, `aggregate_id` and `correlation_id`, then pass on."""
        if log.isEnabledFor(logging.INFO):
            for event in events:
                log.info(
                    "appended %s event_id=%s aggregate_id=%s version=%d correlation_id=%s",
                    event.event_type,
                    event.event_id,
                    event.aggregate_id,
                    event.version,
                    event.correlation_id,
                    extra={
                        "event_id": event.event_id,
                        "aggregate_id": event.aggregate_id,
                        "correlation_id": event.correlation_id,
                        "event_type": event.event_type,
                        "version": event.version,
                    },
                )
        self._inner.events_appended(events)
