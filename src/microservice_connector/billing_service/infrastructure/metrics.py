"""Billing's Prometheus metrics: what the consumer did with each event, how fast, how far
behind, and what it billed."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.events.cart import CART_EVENTS
from microservice_connector.messaging.message import Delivery
from microservice_connector.messaging.settlement import Ack, BatchHandler, Retry, Settlement

KNOWN_TYPES = frozenset(cls.__name__ for cls in CART_EVENTS)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class BillingMetrics:
    """Counters and histograms on `registry`; `on_outcome` is the consumer's listener and
    `timed` wraps its handler."""

    def __init__(self, registry: CollectorRegistry, ledger: BillingLedger) -> None:
        self.events = Counter(
            "msc_billing_events_total",
            "Cart events billing handled, by type and outcome "
            "(applied, duplicate, deferred, retried, dead_lettered).",
            ["event_type", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "msc_billing_dead_letters_total",
            "Messages billing gave up on and sent to the dead-letter stream.",
            registry=registry,
        )
        self.healed = Counter(
            "msc_billing_healed_events_total",
            "Cart events billing applied from the cart store instead of the broker, by source: "
            "repair (a gap filled before an early event) or catch-up (the global feed).",
            ["source"],
            registry=registry,
        )
        self.batch_latency = Histogram(
            "msc_billing_batch_duration_seconds",
            "Time to decode, gate and commit one fetched batch.",
            buckets=BUCKETS,
            registry=registry,
        )
        self.event_age = Histogram(
            "msc_billing_event_age_seconds",
            "Time from an event's occurrence (its occurred-at header) to billing applying it.",
            buckets=BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "msc_billing_consumer_lag_events",
            "Events in the stream that billing's durable consumer has not acknowledged yet.",
            registry=registry,
        )
        registry.register(_LedgerCollector(ledger))

    def timed(self, handler: BatchHandler) -> BatchHandler:
        """`handler`, its batches timed."""

        async def wrapped(deliveries: Sequence[Delivery]) -> list[Settlement]:
            started = time.perf_counter()
            try:
                return await handler(deliveries)
            finally:
                self.batch_latency.observe(time.perf_counter() - started)

        return wrapped

    def on_healed(self, source: str, count: int) -> None:
        """Count `count` events applied from the cart store through `source`."""
        self.healed.labels(source=source).inc(count)

    def on_outcome(self, delivery: Delivery, outcome: Settlement) -> None:
        """Count one settled delivery."""
        if isinstance(outcome, Ack):
            label = "dead_lettered" if outcome.label == "dead-lettered" else outcome.label
        elif isinstance(outcome, Retry):
            label = "retried" if outcome.failure else "deferred"
        else:
            label = "rejected"
        event_type = delivery.message.headers.get("event-type", "")
        event_type = event_type if event_type in KNOWN_TYPES else "unknown"
        self.events.labels(event_type=event_type, outcome=label).inc()
        if label == "dead_lettered":
            self.dead_letters.inc()
        elif label == "applied":
            self._observe_age(delivery.message.headers.get("occurred-at"))

    def _observe_age(self, occurred_at: str | None) -> None:
        if not occurred_at:
            return
        try:
            moment = datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
        except ValueError:
            return
        self.event_age.observe(max(0.0, (datetime.now(UTC) - moment).total_seconds()))


class _LedgerCollector(Collector):
    def __init__(self, ledger: BillingLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "msc_billing_invoices_issued", "Invoices issued.", value=self._ledger.invoices_issued
        )
        yield CounterMetricFamily(
            "msc_billing_unpriced_items",
            "Invoice lines billed at 0 because the item had no price.",
            value=self._ledger.unpriced_lines,
        )
