"""Tracing is off unless the standard OTLP environment asks for it, and off it does nothing."""

from __future__ import annotations

import pytest

from microservice_connector import tracing
from microservice_connector.tracing import setup


@pytest.mark.parametrize(
    ("environment", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_TRACES_EXPORTER": "none",
            },
            False,
        ),
    ],
)
def test_the_environment_decides(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], wanted: bool
) -> None:
    for name in (*setup.ASKING, "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert setup.wanted() is wanted


def test_off_every_helper_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*setup.ASKING, "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.configure_tracing("cart-service", "nats") is False
    assert not tracing.enabled()
    with tracing.span(
        "cart.decide", parent={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    ):
        assert dict(tracing.current_trace()) == {}
    assert dict(tracing.trace_of({"traceparent": "x"})) == {}


def test_the_trace_id_is_read_from_a_traceparent() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id_of(f"00-{trace_id}-00f067aa0ba902b7-01") == trace_id
    assert tracing.trace_id_of(None) is None
    assert tracing.trace_id_of("garbage") is None
