"""Billing's Prometheus metrics: what the consumer did with each event, and what it billed."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.messaging.message import Delivery
from microservice_connector.messaging.outcome import Ack, Outcome, Retry


class BillingMetrics:
    """Counters registered on `registry`; `on_outcome` is the consumer's listener."""

    def __init__(self, registry: CollectorRegistry, ledger: BillingLedger) -> None:
        self.events = Counter(
            "msc_billing_events_total",
            "Cart events billing handled, by outcome "
            "(applied, duplicate, deferred, retried, dead_lettered).",
            ["outcome"],
            registry=registry,
        )
        registry.register(_LedgerCollector(ledger))

    def on_outcome(self, delivery: Delivery, outcome: Outcome) -> None:
        """Count one settled delivery."""
        if isinstance(outcome, Ack):
            label = "dead_lettered" if outcome.label == "dead-lettered" else outcome.label
        elif isinstance(outcome, Retry):
            label = "retried" if outcome.failure else "deferred"
        else:
            label = "rejected"
        self.events.labels(outcome=label).inc()


class _LedgerCollector(Collector):
    def __init__(self, ledger: BillingLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "msc_billing_invoices_issued", "Invoices issued.", value=self._ledger.invoices_issued
        )
        yield CounterMetricFamily(
            "msc_billing_unpriced_lines",
            "Invoice lines billed at 0 because the item had no price.",
            value=self._ledger.unpriced_lines,
        )
