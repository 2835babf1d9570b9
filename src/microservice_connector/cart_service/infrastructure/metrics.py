"""The cart service's Prometheus metrics: commands, conflicts, events, outbox and relay."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.outbox import SqlOutbox

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class CartMetrics:
    """A `CommandObserver` and a `RelayObserver` that count into `registry`; the outbox's
    depth and age are read from the database at each scrape."""

    def __init__(self, registry: CollectorRegistry, outbox: SqlOutbox | None = None) -> None:
        self.commands = Counter(
            "msc_cart_commands_total",
            "Cart commands by command and outcome "
            "(ok, rejected, invalid, not_found, conflict, error).",
            ["command", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "msc_cart_command_duration_seconds",
            "Time from a command's start to its answer, commit included.",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.conflicts = Counter(
            "msc_cart_concurrency_conflicts_total",
            "Appends that lost the race for a cart's next version and were retried.",
            ["command"],
            registry=registry,
        )
        self.appended = Counter(
            "msc_cart_events_appended_total",
            "Events committed to the event store, by type.",
            ["event_type"],
            registry=registry,
        )
        self.published = Counter(
            "msc_outbox_published_total", "Outbox rows the broker acknowledged.", registry=registry
        )
        self.relay_errors = Counter(
            "msc_outbox_publish_errors_total",
            "Outbox rows the broker did not acknowledge (they stay pending).",
            registry=registry,
        )
        self.publish_latency = Histogram(
            "msc_outbox_publish_duration_seconds",
            "Time for the broker to acknowledge one relay round (a batch in flight).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        if outbox is not None:
            registry.register(OutboxCollector(outbox))
        # Labelled children found once per label set, not on every command (`labels` costs
        # more than the count itself).
        self._counted: dict[tuple[str, str], Counter] = {}
        self._timed: dict[str, Histogram] = {}
        self._appended: dict[str, Counter] = {}

    def command_finished(self, command: str, outcome: str, seconds: float) -> None:
        """Count the command and observe its latency."""
        counter = self._counted.get((command, outcome))
        if counter is None:
            counter = self._counted[(command, outcome)] = self.commands.labels(command, outcome)
        counter.inc()
        timer = self._timed.get(command)
        if timer is None:
            timer = self._timed[command] = self.latency.labels(command)
        timer.observe(seconds)

    def conflict_retried(self, command: str) -> None:
        """Count a lost race."""
        self.conflicts.labels(command=command).inc()

    def events_appended(self, events: Sequence[RecordedEvent]) -> None:
        """Count committed events by type."""
        for event in events:
            counter = self._appended.get(event.event_type)
            if counter is None:
                counter = self._appended[event.event_type] = self.appended.labels(event.event_type)
            counter.inc()

    def round_finished(self, published: int, failed: int, publish_seconds: float) -> None:
        """Count a relay round."""
        self.published.inc(published)
        self.relay_errors.inc(failed)
        self.publish_latency.observe(publish_seconds)


class OutboxCollector(Collector):
    """`msc_outbox_pending_rows` and `msc_outbox_oldest_pending_age_seconds`, read at scrape."""

    def __init__(self, outbox: SqlOutbox) -> None:
        self._outbox = outbox

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            status = self._outbox.status()
        except DatabaseUnavailable:
            return
        yield GaugeMetricFamily(
            "msc_outbox_pending_rows",
            "Outbox rows not yet acknowledged by the broker.",
            value=status.pending,
        )
        yield GaugeMetricFamily(
            "msc_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none).",
            value=status.oldest_age_seconds(),
        )
