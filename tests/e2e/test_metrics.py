"""The services' metrics tell the truth: counted against what really happened, read with
prometheus_client's parser and through a real Prometheus server scraping both services."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support.processes import free_port, wait_for
from support.system import Flow, running_flow, shop

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
DEPLOY = Path(__file__).parents[2] / "deploy"


@pytest.fixture
def flow(tmp_path: Path) -> Iterator[Flow]:
    with running_flow(tmp_path) as flow:
        yield flow


def samples(url: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    text = httpx.get(f"{url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def stored_events(flow: Flow) -> int:
    count, after = 0, 0
    while events := flow.http.get(
        f"{flow.cart_url}/events", params={"after": after, "limit": 1000}
    ).json()["events"]:
        count += len(events)
        after = events[-1]["position"]
    return count


def test_counters_equal_what_happened(flow: Flow, tmp_path: Path) -> None:
    carts = [f"m-{n}" for n in range(8)]
    accepted = shop(flow.http, flow.cart_url, carts, commands=60, seed=3)
    flow.http.post(f"{flow.cart_url}/carts/m-0/items", json={"item_id": "a", "quantity": 0})  # 422
    flow.wait_until_billed(carts)
    events = stored_events(flow)
    checkouts = sum(flow.cart(c)["status"] == "checked_out" for c in carts)

    assert samples(flow.cart_url, "msc_cart_events_appended_total") == events
    assert samples(flow.cart_url, "msc_cart_commands_total", outcome="ok") == accepted + checkouts
    assert (
        samples(
            flow.cart_url, "msc_http_requests_total", route="/carts/{cart_id}/items", status="422"
        )
        == 1
    )
    wait_for(
        lambda: samples(flow.cart_url, "msc_outbox_published_total") == events, 10, "relay counts"
    )
    assert samples(flow.cart_url, "msc_outbox_pending_rows") == 0
    assert samples(flow.billing_url, "msc_billing_events_total", outcome="applied") == events
    assert samples(flow.billing_url, "msc_billing_invoices_issued_total") == checkouts
    assert samples(flow.billing_url, "msc_billing_dead_letters_total") == 0

    # A real Prometheus, with the project's config pointed at this test's ports.
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is not installed; `make test` installs it (Debian package)")
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    ports = {"cart-service": flow.cart_url, "billing-service": flow.billing_url}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [ports[job["job_name"]].removeprefix("http://")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    port = free_port()
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:

        def query(expr: str) -> float | None:
            try:
                body = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}
                ).json()
            except (httpx.HTTPError, ValueError):  # not up yet, or "Service Unavailable" text
                return None
            result = body.get("data", {}).get("result", [])
            return float(result[0]["value"][1]) if result else None

        wait_for(
            lambda: query("sum(msc_cart_events_appended_total)") == events,
            60,
            "Prometheus to scrape the cart",
        )
        wait_for(
            lambda: query('sum(msc_billing_events_total{outcome="applied"})') == events,
            30,
            "Prometheus to scrape billing",
        )
        assert query('count(up{job=~"cart-service|billing-service"} == 1)') == 2
    finally:
        server.terminate()
        server.wait(timeout=30)
