"""The event browser in headless Chromium (Debian's, driven by Playwright) against a real
system: cart service, billing and nats-server as `msc up` starts them, shared by the module.

Screenshots go to the test's temporary folder (`MSC_UI_SCREENSHOTS` names another one)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from microservice_connector.messaging.message import Message
from microservice_connector.runtime.broker_link import open_broker_link
from microservice_connector.runtime.system import System
from microservice_connector.settings import Settings
from support.processes import free_port, msc_service, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("MSC_CHROMIUM", "/usr/bin/chromium")
try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev dependencies bring it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Cart, billing and nats-server as real processes, as `msc up` runs them."""
    with System(tmp_path_factory.mktemp("ui-system"), free_port(), free_port()) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from the Debian package; fails (never skips) without it."""
    if sync_playwright is None:
        pytest.fail("the playwright package is missing: pip install -e '.[dev]'", pytrace=False)
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run `make tools` as root (apt-get install chromium) "
            "or set MSC_CHROMIUM to a Chromium executable",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    chosen = os.environ.get("MSC_UI_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("ui-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser, system: System) -> Iterator[Page]:
    """The event browser at 1280x800, its live feed connected."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.goto(f"{cart_url(system)}/ui/")
    expect(opened.get_by_test_id("health-feed")).to_have_text("live feed: connected")
    yield opened
    context.close()


def cart_url(system: System) -> str:
    return f"http://{system.host}:{system.cart_port}"


def billing_url(system: System) -> str:
    return f"http://{system.host}:{system.billing_port}"


def add_item(system: System, cart_id: str, item_id: str, quantity: int) -> dict[str, Any]:
    response = httpx.post(
        f"{cart_url(system)}/carts/{cart_id}/items",
        json={"item_id": item_id, "quantity": quantity},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def new_cart() -> str:
    return f"ui-{uuid.uuid4().hex[:10]}"


def test_an_added_item_appears_in_the_live_feed_within_a_second(
    page: Page, system: System, shots: Path
) -> None:
    cart_id = new_cart()
    add_item(system, cart_id, "item-001", 2)
    stored = time.monotonic()
    row = page.locator("#feed-rows tr", has_text=cart_id)
    row.wait_for(timeout=1000)
    assert time.monotonic() - stored < 1.0
    expect(row).to_contain_text("ItemAdded")
    expect(row).to_contain_text('"item_id":"item-001","quantity":2')
    page.screenshot(path=shots / "live-feed.png")


def test_stepping_back_one_version_shows_the_earlier_state(
    page: Page, system: System, shots: Path
) -> None:
    cart_id = new_cart()
    add_item(system, cart_id, "item-001", 2)
    add_item(system, cart_id, "item-002", 1)
    page.get_by_test_id("cart-id").fill(cart_id)
    page.get_by_test_id("open-cart").click()
    state = page.get_by_test_id("cart-state")
    expect(page.get_by_test_id("version-label")).to_have_text("version 2 of 2")
    expect(state).to_contain_text("item-002")

    page.get_by_test_id("version-prev").click()

    expect(page.get_by_test_id("version-label")).to_have_text("version 1 of 2")
    expect(state).not_to_contain_text("item-002")
    expect(state).to_contain_text("item-001")
    expect(page.get_by_test_id("cart-diff")).to_contain_text("+2 item-001")
    expect(page.get_by_test_id("cart-event")).to_contain_text('"version": 1')
    page.screenshot(path=shots / "time-travel.png")


def test_an_events_lineage_reaches_applied_by_billing(
    page: Page, system: System, shots: Path
) -> None:
    cart_id = new_cart()
    add_item(system, cart_id, "item-003", 1)
    page.locator("#feed-rows tr", has_text=cart_id).click()
    lineage = page.get_by_test_id("lineage")
    expect(lineage).to_contain_text("applied by billing", timeout=20_000)
    expect(lineage).to_contain_text("correlation id")
    expect(lineage).to_contain_text("stored as sequence")
    expect(lineage).to_contain_text("none yet: the cart is not checked out")
    expect(page.get_by_test_id("bill")).to_contain_text("125.00", timeout=5_000)
    page.screenshot(path=shots / "lineage.png", full_page=True)


def test_replaying_a_dead_letter_from_the_panel_gets_it_applied(
    page: Page, system: System, shots: Path
) -> None:
    cart_id = new_cart()
    put_dead_letter(system, cart_id)
    row = page.locator("#deadletter-rows tr", has_text=cart_id)
    expect(row).to_contain_text("simulated outage", timeout=10_000)
    expect(page.get_by_test_id("health-dead")).not_to_have_text("dead letters: 0")
    page.screenshot(path=shots / "dead-letters.png", full_page=True)

    row.get_by_role("button", name="Replay").click()

    expect(page.get_by_test_id("deadletter-message")).to_contain_text("Replayed dead letter")
    expect(row).to_have_count(0)
    wait_for(
        lambda: httpx.get(f"{billing_url(system)}/billing/carts/{cart_id}").status_code == 200,
        20,
        "billing to apply the replayed event",
    )


def test_unknown_cart_and_billing_down_each_say_so(page: Page, system: System) -> None:
    page.get_by_test_id("cart-id").fill("no-such-cart")
    page.get_by_test_id("open-cart").click()
    expect(page.get_by_test_id("cart-message")).to_contain_text('There is no cart "no-such-cart"')

    page.route(f"{billing_url(system)}/**", lambda route: route.abort())
    expect(page.get_by_test_id("banner")).to_contain_text("billing service at", timeout=5_000)
    expect(page.get_by_test_id("health-lag")).to_have_text("consumer lag: billing down")


def test_an_event_billing_has_not_reached_says_so(page: Page, system: System) -> None:
    page.route(  # billing, as it answers before the event reaches it
        f"{billing_url(system)}/billing/events/**",
        lambda route: route.fulfill(status=404, json={"detail": "billing has not handled it"}),
    )
    cart_id = new_cart()
    add_item(system, cart_id, "item-004", 1)
    page.locator("#feed-rows tr", has_text=cart_id).click()
    lineage = page.get_by_test_id("lineage")
    expect(lineage).to_contain_text("not handled by billing yet")
    expect(lineage).to_contain_text("stored event")
    expect(page.get_by_test_id("lineage-message")).to_contain_text("following it")


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_the_page_fits_the_screen_without_sideways_scrolling(
    browser: Browser, system: System, shots: Path, width: int, height: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        opened = context.new_page()
        opened.goto(f"{cart_url(system)}/ui/")
        expect(opened.get_by_test_id("health-feed")).to_have_text("live feed: connected")
        overflow = opened.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{overflow}px of sideways scrolling at {width}x{height}"
        opened.screenshot(path=shots / f"page-{width}x{height}.png")
    finally:
        context.close()


def put_dead_letter(system: System, cart_id: str) -> None:
    """Store a valid `ItemAdded` (3 of item-002, version 1) straight in the dead letters, as if
    billing had given up on it during an outage."""
    moment = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event_id = str(uuid.uuid4())
    message = Message(
        id=event_id,
        topic="cart.events",
        payload=(
            f'{{"cart_id":"{cart_id}","item_id":"item-002","quantity":3,"timestamp":"{moment}"}}'
        ).encode(),
        headers={
            "event-id": event_id,
            "event-type": "ItemAdded",
            "aggregate-id": cart_id,
            "aggregate-type": "ShoppingCart",
            "aggregate-version": "1",
            "content-type": "application/json",
            "schema-version": "1",
            "occurred-at": moment,
        },
        key=cart_id,
    )

    async def put() -> None:
        link = open_broker_link(
            Settings(broker="nats", nats_url=system.nats_url or ""), name="ui-test"
        )
        try:
            await asyncio.wait_for(link.run(asyncio.Event()), 30)
            letters = await link.dead_letters()
            await letters.put(message, "billing database unreachable (simulated outage)")
        finally:
            await link.close()

    # Playwright's sync API runs an event loop in this thread: use one of our own elsewhere.
    with ThreadPoolExecutor(1) as other_thread:
        other_thread.submit(asyncio.run, put()).result()


def test_sigterm_ends_open_live_feeds_so_the_cart_service_stops_at_once(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["cart-service", "--port", str(port), "--data-dir", str(tmp_path), "--no-relay"]
    with (
        msc_service(args, health_url=f"{base}/healthz", log=tmp_path / "cart.log") as process,
        httpx.stream("GET", f"{base}/events/stream", timeout=30) as feed,
    ):
        lines = feed.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines) == "retry: 1000"
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        took = time.monotonic() - stopping
    log = (tmp_path / "cart.log").read_text()
    assert "Application shutdown complete" in log, log[-2000:]  # uvicorn re-raises SIGTERM
    # Well below the 10 s a server waits for open responses, with room for a busy machine.
    assert took < 5, f"took {took:.1f} s to stop with a live feed open"
