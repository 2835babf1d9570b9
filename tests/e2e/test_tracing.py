"""One trace from an HTTP command to its invoice, across both services as processes, on each
broker: the services export OTLP/HTTP to a receiver this test runs, which decodes the real
protobuf payloads."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

# The Chromium fixture is the event browser suite's: one way to launch it.
from e2e.test_event_browser import browser  # noqa: F401
from microservice_connector.runtime.system import System
from support.otlp import OtlpReceiver, ReceivedSpan
from support.processes import free_port, wait_for
from support.tansu import tansu_or_skip

pytestmark = pytest.mark.e2e

SERVER, PRODUCER, CONSUMER = 2, 4, 5  # opentelemetry.proto.trace.v1.Span.SpanKind


# Kafka's run is in make reliability, to keep make test within its time.
@pytest.fixture(
    params=["nats", pytest.param("kafka", marks=[pytest.mark.kafka, pytest.mark.reliability])]
)
def traced(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[System, OtlpReceiver]]:
    """Cart, billing and a broker as processes, exporting their spans to a receiver."""
    if request.param == "kafka":
        tansu_or_skip()
    with OtlpReceiver() as receiver, pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within 50 ms, not 5 s
        env.setenv("MSC_LOG_FORMAT", "json")
        with System(tmp_path, free_port(), free_port(), broker=request.param) as system:
            yield system, receiver


def test_one_trace_runs_from_the_http_command_to_the_invoice(
    traced: tuple[System, OtlpReceiver], request: pytest.FixtureRequest
) -> None:
    system, receiver = traced
    cart = f"http://{system.host}:{system.cart_port}"
    cart_id = f"traced-{uuid.uuid4().hex[:8]}"
    added = httpx.post(f"{cart}/carts/{cart_id}/items", json={"item_id": "item-001", "quantity": 2})
    assert added.status_code == 200, added.text
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    checked_out = httpx.post(
        f"{cart}/carts/{cart_id}/checkout",
        headers={"traceparent": f"00-{trace_id}-{client_span}-01", "tracestate": "msc=test"},
    )
    assert checked_out.status_code == 200, checked_out.text

    wanted = {
        ("cart-service", "POST /carts/{cart_id}/checkout"),
        ("cart-service", "cart.decide"),
        ("cart-service", "cart.append"),
        ("cart-service", "send cart.events"),
        ("billing-service", "process cart.events"),
        ("billing-service", "billing.apply"),
        ("billing-service", "billing.invoice"),
        ("billing-service", "send billing.events"),  # InvoiceIssued carried the trace on
    }
    wait_for(
        lambda: wanted <= {(s.service, s.name) for s in receiver.trace(trace_id)},
        30,
        f"every span of trace {trace_id} (got {_names(receiver.trace(trace_id))})",
    )
    spans = receiver.trace(trace_id)
    [root] = [s for s in spans if s.name == "POST /carts/{cart_id}/checkout"]
    assert root.parent_id == client_span  # the caller's traceparent was honoured
    assert root.kind == SERVER
    assert root.attributes["http.route"] == "/carts/{cart_id}/checkout"
    assert root.attributes["http.response.status_code"] == "200"
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span is not root:
            assert root in _ancestors(span, by_id), f"{span.name} does not descend from the root"
    kinds = {s.name: s.kind for s in spans}
    assert kinds["send cart.events"] == PRODUCER
    assert kinds["process cart.events"] == CONSUMER
    consumed = next(s for s in spans if s.name == "process cart.events")
    assert consumed.attributes["messaging.system"] == system.broker
    assert consumed.attributes["messaging.destination.name"] == "cart.events"

    events = httpx.get(f"{cart}/carts/{cart_id}/events").json()["events"]
    assert events[-1]["trace_id"] == trace_id  # what the lineage view shows
    assert events[0]["trace_id"] != trace_id  # the first command had its own trace
    cart_log = (system.data_dir / "logs" / "cart-service.log").read_text()
    logged = [json.loads(line) for line in cart_log.splitlines() if trace_id in line]
    assert any(entry.get("span_id") for entry in logged), "no log line carries the trace"
    if system.broker == "nats":  # the event browser is the same on either broker
        _the_lineage_view_shows(request.getfixturevalue("browser"), cart, cart_id, trace_id)


def _the_lineage_view_shows(chromium: Browser, cart: str, cart_id: str, trace_id: str) -> None:
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{cart}/ui/")
        page.locator("#feed-rows tr", has_text="CartCheckedOut").filter(has_text=cart_id).click()
        expect(page.get_by_test_id("lineage")).to_contain_text(f"trace id {trace_id}")
    finally:
        context.close()


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    found = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        found.append(span)
    return found


def _names(spans: list[ReceivedSpan]) -> list[str]:
    return sorted(f"{s.service}:{s.name}" for s in spans)
