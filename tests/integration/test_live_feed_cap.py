"""`MSC_LIVE_FEED_MAX_STREAMS` caps the open `GET /events/stream` clients: one past the cap
gets 503 with a `detail` naming the setting, and a place freed by a client that left is
given to the next one."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings


def test_a_stream_past_the_cap_gets_503_until_a_place_is_free(tmp_path: Path) -> None:
    app = build_cart_app(Settings(data_dir=tmp_path, live_feed_max_streams=2), relay=False)
    with TestClient(app) as client:
        with (
            client.stream("GET", "/events/stream") as first,
            client.stream("GET", "/events/stream") as second,
        ):
            assert next(first.iter_lines()) == next(second.iter_lines()) == "retry: 1000"
            with client.stream("GET", "/events/stream") as refused:  # a stream would not end
                assert refused.status_code == 503
                assert "MSC_LIVE_FEED_MAX_STREAMS" in refused.read().decode()
        deadline = time.monotonic() + 5
        while app.state.live_feed.open_streams:  # the closed streams end on the server's side
            assert time.monotonic() < deadline, "closed streams kept their places"
            time.sleep(0.01)
        with client.stream("GET", "/events/stream") as third:
            assert next(third.iter_lines()) == "retry: 1000"
