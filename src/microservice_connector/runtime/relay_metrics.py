"""The relay audit's Prometheus counters, the same in every service that relays an outbox."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from microservice_connector.eventstore.broker_audit import BrokerLoss


class BrokerLossMetrics:
    """An `AuditObserver` counting into `registry` each loss the audit found and the rows it
    queued to be published again."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.regressions = Counter(
            "msc_relay_broker_regressions_total",
            "Times the broker was found to have lost messages it acknowledged, by topic and kind "
            "(tail_lost: its last sequence went back; recreated: its log was made anew).",
            ["topic", "kind"],
            registry=registry,
        )
        self.republished = Counter(
            "msc_relay_republished_rows_total",
            "Acknowledged outbox rows the broker lost, made pending to be published again.",
            ["topic"],
            registry=registry,
        )

    def broker_lost(self, loss: BrokerLoss) -> None:
        """Count the loss and its rows."""
        self.regressions.labels(topic=loss.topic, kind=loss.kind).inc()
        self.republished.labels(topic=loss.topic).inc(loss.rearmed)
