"""The event browser against a system whose reads are locked (`MSC_READ_TOKEN`), in headless
Chromium: it asks for the token once, then the feed, carts, lineage and bills all work, and
the token never appears in a URL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Request, expect

from microservice_connector.runtime.system import System
from support.processes import free_port

pytestmark = pytest.mark.e2e

READ, WRITE = "ui-read-s3cret", "ui-write-s3cret"

# The Chromium fixture is the event browser suite's: one way to launch it.
from e2e.test_event_browser import browser  # noqa: E402, F401


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Cart, billing and nats-server as processes, reads and commands each behind a token."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MSC_READ_TOKEN", READ)
        env.setenv("MSC_API_TOKEN", WRITE)
        with System(tmp_path_factory.mktemp("locked"), free_port(), free_port()) as running:
            yield running


def test_the_browser_asks_for_the_read_token_once_then_shows_everything(
    browser: Browser,  # noqa: F811
    system: System,
) -> None:
    cart = f"http://{system.host}:{system.cart_port}"
    assert httpx.get(f"{cart}/events").status_code == 401  # the system is locked indeed
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    urls: list[str] = []
    page = context.new_page()
    page.on("request", lambda request: urls.append(_url(request)))
    try:
        page.goto(f"{cart}/ui/")
        expect(page.get_by_test_id("token-form")).to_be_visible()
        expect(page.get_by_test_id("health-feed")).not_to_have_text("live feed: connected")

        page.get_by_test_id("read-token").fill("wrong")
        page.get_by_test_id("unlock").click()
        expect(page.get_by_test_id("token-message")).to_contain_text("refused")

        page.get_by_test_id("read-token").fill(READ)
        page.get_by_test_id("unlock").click()
        expect(page.get_by_test_id("token-form")).to_be_hidden()
        expect(page.get_by_test_id("health-feed")).to_have_text("live feed: connected")

        cart_id = f"locked-{uuid.uuid4().hex[:8]}"
        added = httpx.post(
            f"{cart}/carts/{cart_id}/items",
            json={"item_id": "item-003", "quantity": 1},
            headers={"Authorization": f"Bearer {WRITE}"},
        )
        assert added.status_code == 200, added.text
        row = page.locator("#feed-rows tr", has_text=cart_id)
        expect(row).to_contain_text("ItemAdded", timeout=5_000)  # through the live feed
        row.click()
        expect(page.get_by_test_id("version-label")).to_have_text("version 1 of 1")
        lineage = page.get_by_test_id("lineage")
        expect(lineage).to_contain_text("applied by billing", timeout=20_000)  # billing reads
        expect(page.get_by_test_id("bill")).to_contain_text("125.00", timeout=5_000)
        expect(page.get_by_test_id("health-lag")).to_contain_text("consumer lag: 0")
        expect(page.get_by_test_id("token-form")).to_be_hidden()  # asked once
    finally:
        context.close()
    assert not [url for url in urls if READ in url or WRITE in url]


def _url(request: Request) -> str:
    return request.url
