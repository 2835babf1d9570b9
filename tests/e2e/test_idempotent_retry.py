"""A command whose answer is lost on the way back is retried by `msc cart` with the same
`Idempotency-Key` and applied exactly once: the connection is cut after the server
committed the command and before the client read the answer."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings
from microservice_connector.web.guards import ASGIApp, Message, Receive, Scope, Send
from support.asgi_server import served
from support.processes import MSC, cart_service
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


class HoldFirstAnswer:
    """Holds the first command's answer, once the command is committed, until `release`."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.committed = threading.Event()
        self.release = threading.Event()
        self._held = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or self._held:
            await self._app(scope, receive, send)
            return
        self._held = True

        async def held(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.committed.set()  # the answer exists: its command is committed
                await asyncio.to_thread(self.release.wait, 60)
            await send(message)

        await self._app(scope, receive, held)


def _add_through(proxy: TcpProxy) -> subprocess.Popen[str]:
    url = f"http://127.0.0.1:{proxy.port}"
    return subprocess.Popen(
        [MSC, "cart", "add", "c1", "item-1", "2", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cut_after_commit(held: HoldFirstAnswer, proxy: TcpProxy, retry_to: int | None) -> None:
    """Wait until the command is committed, then cut the client's connection before it
    reads the answer; the retry goes through the proxy to `retry_to` if given."""
    assert held.committed.wait(60), "the command never committed"
    proxy.cut()
    if retry_to is not None:
        proxy.target = retry_to
    proxy.restore()
    held.release.set()


def _events(port: int) -> list[dict[str, object]]:
    answer = httpx.get(f"http://127.0.0.1:{port}/carts/c1/events", timeout=10)
    events: list[dict[str, object]] = answer.json()["events"]
    return events


def _assert_retried_and_applied_once(cli: subprocess.Popen[str], port: int) -> None:
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert "retrying" in err
    assert "same Idempotency-Key" in err
    assert "version 1" in out
    events = _events(port)
    assert [(e["event_type"], e["version"]) for e in events] == [("ItemAdded", 1)]


def test_the_retry_of_a_command_whose_answer_was_lost_applies_it_once(tmp_path: Path) -> None:
    held = HoldFirstAnswer(build_cart_app(Settings(data_dir=tmp_path), relay=False))
    with served(held) as port:
        proxy = TcpProxy(port)
        proxy.restore()
        try:
            cli = _add_through(proxy)
            _cut_after_commit(held, proxy, retry_to=None)
            _assert_retried_and_applied_once(cli, port)
        finally:
            proxy.close()


@pytest.mark.postgres
def test_the_retry_on_another_instance_applies_it_once(postgres_url: str, tmp_path: Path) -> None:
    """The first instance commits and loses the connection; the retry reaches a second
    instance, a separate process on the same PostgreSQL database, which knows the key."""
    settings = Settings(data_dir=tmp_path / "a", database_url=postgres_url)
    held = HoldFirstAnswer(build_cart_app(settings, relay=False))
    with (
        served(held) as first,
        cart_service(tmp_path / "b", database_url=postgres_url) as second_url,
    ):
        second = int(second_url.rsplit(":", 1)[1])
        proxy = TcpProxy(first)
        proxy.restore()
        try:
            cli = _add_through(proxy)
            _cut_after_commit(held, proxy, retry_to=second)
            _assert_retried_and_applied_once(cli, second)
        finally:
            proxy.close()
