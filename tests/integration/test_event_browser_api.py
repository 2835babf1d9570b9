"""The cart endpoints behind the event browser, over HTTP without a browser: one event, its
outbox row, the outbox status, the live feed (SSE), what counts as a request in flight for it,
and the page itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, GroupCommitStore, SqlEventStore
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.memory import InMemoryBroker, InMemoryPublisher
from microservice_connector.settings import Settings

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_cart_app(Settings(data_dir=tmp_path), relay=False)) as client:
        yield client


def add(client: TestClient, cart_id: str, item_id: str = "item-001", **headers: str) -> None:
    response = client.post(
        f"/carts/{cart_id}/items", json={"item_id": item_id, "quantity": 2}, headers=headers
    )
    assert response.status_code == 200, response.text


def first_event(client: TestClient, cart_id: str) -> dict[str, Any]:
    event: dict[str, Any] = client.get(f"/carts/{cart_id}/events").json()["events"][0]
    return event


def test_an_events_lineage_is_the_stored_event_with_its_correlation_id_and_outbox_row(
    client: TestClient,
) -> None:
    add(client, "c-1", **{"X-Correlation-ID": "req-42"})
    event = first_event(client, "c-1")
    found = client.get(f"/lineage/{event['event_id']}")
    assert found.status_code == 200
    assert found.json()["event"] == event
    assert found.json()["event"]["correlation_id"] == "req-42"
    assert found.json()["outbox"] == client.get(f"/outbox/{event['event_id']}").json()


def test_a_new_events_outbox_row_is_pending_with_no_broker_sequence(client: TestClient) -> None:
    add(client, "c-1")
    event_id = first_event(client, "c-1")["event_id"]
    row = client.get(f"/outbox/{event_id}").json()
    assert row["event_id"] == event_id
    assert row["topic"] == "cart.events"
    assert row["status"] == "pending"
    assert (row["published_at"], row["broker_sequence"], row["attempts"]) == (None, None, 0)
    status = client.get("/outbox").json()
    assert status["pending"] == 1
    assert status["published"] == 0
    assert status["oldest_age_seconds"] >= 0


@pytest.mark.parametrize("path", ["/lineage/{}", "/outbox/{}"])
def test_an_unknown_event_id_is_404_naming_it_and_a_malformed_one_422(
    client: TestClient, path: str
) -> None:
    unknown = client.get(path.format(UNKNOWN))
    assert unknown.status_code == 404
    assert UNKNOWN in unknown.json()["detail"]
    malformed = client.get(path.format("not an id!"))
    assert malformed.status_code == 422
    assert "event_id" in malformed.json()["detail"]


def test_the_live_feed_sends_stored_events_then_new_ones_and_resumes_after_last_event_id(
    client: TestClient,
) -> None:
    add(client, "c-1")
    add(client, "c-2")
    with client.stream("GET", "/events/stream", params={"after": 0}) as stream:
        lines = stream.iter_lines()
        assert [next(lines) for _ in range(2)] == ["retry: 1000", ""]
        assert _next_event(lines)[0] == 1
        assert _next_event(lines)[0] == 2
        add(client, "c-3")  # stored while the stream is open: it arrives on it
        position, event = _next_event(lines)
        assert (position, event["aggregate_id"]) == (3, "c-3")
    with client.stream("GET", "/events/stream", headers={"Last-Event-ID": "2"}) as stream:
        assert _next_event(stream.iter_lines())[0] == 3
    with client.stream("GET", "/events/stream", params={"recent": 1}) as stream:
        assert _next_event(stream.iter_lines())[0] == 3


def test_every_request_but_a_live_stream_counts_as_in_flight_while_it_is_answered(
    tmp_path: Path,
) -> None:
    app = build_cart_app(Settings(data_dir=tmp_path), relay=False)
    requests = app.state.live_feed.requests  # what the feed's fan-out gives way to

    @app.get("/test/in-flight")
    async def in_flight() -> dict[str, int]:
        return {"count": requests.count}

    with TestClient(app) as client:
        add(client, "c-1")
        with client.stream("GET", "/events/stream", params={"after": 0}) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 1000"
            assert client.get("/test/in-flight").json() == {"count": 1}  # itself alone
            add(client, "c-2")  # a command still reaches an open stream
            assert [_next_event(lines)[0] for _ in range(2)] == [1, 2]
    assert requests.count == 0


@pytest.mark.parametrize(
    "resume", [b"abc", b"\xb2", b"1\xb9", b"9" * 4_301, b"-1", b"+1", b"9" * 20]
)
def test_the_live_feed_refuses_a_malformed_resume_point(client: TestClient, resume: bytes) -> None:
    # "\xb2" reaches the app as "²", which str.isdigit() calls a digit and int() refuses;
    # 4,301 digits are past what int() converts.
    bad_header = client.get("/events/stream", headers={"Last-Event-ID": resume})
    assert bad_header.status_code == 422
    assert "Last-Event-ID" in bad_header.json()["detail"]
    assert client.get("/events/stream", params={"after": -1}).status_code == 422


def test_the_page_and_its_files_are_served_with_the_billing_address(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, billing_url="http://billing.example:9000")
    with TestClient(build_cart_app(settings, relay=False)) as client:
        page = client.get("/ui/")
        assert page.status_code == 200
        assert "Event browser" in page.text
        assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no CDN
        for name in ("app.js", "style.css"):
            assert client.get(f"/ui/{name}").status_code == 200
        assert client.get("/ui/config.json").json() == {
            "billing_url": "http://billing.example:9000"
        }
        assert client.get("/", follow_redirects=False).headers["location"] == "/ui/"


def _next_event(lines: Iterator[str]) -> tuple[int, dict[str, Any]]:
    """The next `id:`/`data:` pair of an SSE stream, skipping comments and blank lines."""
    position = None
    for line in lines:
        if line.startswith("id: "):
            position = int(line.removeprefix("id: "))
        elif line.startswith("data: "):
            assert position is not None
            return position, json.loads(line.removeprefix("data: "))
    raise AssertionError("the stream ended")


def test_the_relay_records_where_the_broker_stored_each_row(tmp_path: Path) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    writer = GroupCommitStore(store, outbox=store.outbox)
    broker = InMemoryBroker()

    async def scenario() -> list[str]:
        for cart in ("c-1", "c-2"):
            event = NewEvent("ItemAdded", ItemAdded(cart, "item-001", 1, _now()), _now())
            await writer.append(AppendRequest(cart, "ShoppingCart", 0, [event]))
        relay = OutboxRelay(
            store.outbox, InMemoryPublisher(broker), mark_published=writer.mark_published
        )
        assert (await relay.relay_once()).published == 2
        return [e.event_id for e in store.read_all()]

    try:
        event_ids = asyncio.run(scenario())
        records = [store.outbox.record(event_id) for event_id in event_ids]
        assert [r.broker_sequence for r in records if r is not None] == [1, 2]
        assert all(r is not None and r.published_at is not None for r in records)
    finally:
        writer.close()


def test_an_outbox_made_before_broker_sequence_gets_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    old = SqlEventStore(url)
    with old.writer.begin() as connection:
        connection.execute(text("ALTER TABLE outbox DROP COLUMN broker_sequence"))
    old.close()
    reopened = SqlEventStore(url)
    try:
        assert reopened.outbox.record(UNKNOWN) is None
        with reopened.writer.begin() as connection:
            columns = [row[1] for row in connection.execute(text("PRAGMA table_info(outbox)"))]
        assert "broker_sequence" in columns
    finally:
        reopened.close()


def _now() -> datetime:
    return datetime.now(UTC)
