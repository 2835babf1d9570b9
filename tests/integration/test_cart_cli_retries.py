"""`msc cart` resends a command with the same `Idempotency-Key` while the service answers
503 or 409 with `Retry-After`, and gives up on any other answer."""

from __future__ import annotations

import json

import httpx
import pytest

from microservice_connector.cli.cart import send_with_retries
from microservice_connector.web.guards import Receive, Scope, Send
from support.asgi_server import served


class Scripted:
    """Answers requests with the statuses given, in turn (a 409 with `Retry-After` unless
    told otherwise); records each request's key."""

    def __init__(self, *statuses: int, retry_after: bool = True) -> None:
        self._statuses = list(statuses)
        self._retry_after = retry_after
        self.keys: list[str | None] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        key = headers.get(b"idempotency-key")
        self.keys.append(None if key is None else key.decode())
        status = self._statuses.pop(0)
        extra = [(b"retry-after", b"1")] if status == 409 and self._retry_after else []
        body = json.dumps({"detail": "scripted"}).encode()
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_command_is_resent_with_the_same_key_until_it_gets_through(method: str) -> None:
    app = Scripted(503, 409, 503, 200)
    with served(app) as port:
        answer = send_with_retries(method, f"http://127.0.0.1:{port}/carts/c1/checkout")
    assert answer.status_code == 200
    assert len(app.keys) == 4
    assert len(set(app.keys)) == 1
    key = app.keys[0]
    assert key is not None
    assert key.startswith('"')
    assert key.endswith('"')


def test_each_command_gets_its_own_key_and_reads_get_none() -> None:
    app = Scripted(200, 200, 200)
    with served(app) as port:
        for method in ("POST", "POST", "GET"):
            send_with_retries(method, f"http://127.0.0.1:{port}/carts/c1")
    first, second, read = app.keys
    assert first != second
    assert read is None


def test_a_read_is_retried_without_claiming_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    app = Scripted(503, 200)
    with served(app) as port:
        answer = send_with_retries("GET", f"http://127.0.0.1:{port}/carts/c1")
    assert answer.status_code == 200
    assert app.keys == [None, None]
    said = capsys.readouterr().err
    assert "retrying (answered 503) (a read: safe to repeat)" in said
    assert "Idempotency-Key" not in said


@pytest.mark.parametrize("status", [200, 404, 409, 422, 500])
def test_an_answer_that_a_retry_cannot_change_is_final(status: int) -> None:
    app = Scripted(status, 200, retry_after=False)  # a 409 without Retry-After: a rule
    with served(app) as port:
        answer = send_with_retries("POST", f"http://127.0.0.1:{port}/carts/c1/checkout")
    assert answer.status_code == status
    assert len(app.keys) == 1


def test_it_gives_up_after_its_attempts_with_the_last_answer() -> None:
    app = Scripted(503, 503, 503)
    with served(app) as port:
        answer = send_with_retries("POST", f"http://127.0.0.1:{port}/x", attempts=3)
    assert answer.status_code == 503
    assert len(app.keys) == 3


def test_a_url_that_is_not_http_is_refused_without_retries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        send_with_retries("POST", "garbage/carts/c/checkout", attempts=6)
    assert "retrying" not in capsys.readouterr().err
