"""`AnswerWhenStopped`: a request the server cancels while stopping answers 503 in JSON,
unless its answer had begun."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from microservice_connector.web.stopping import STOPPED_DETAIL, AnswerWhenStopped

Message = dict[str, Any]


class Connection:
    """The server's side of one request: what was sent, refusing a second answer's start
    as uvicorn does."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(self, message: Message) -> None:
        started = any(m["type"] == "http.response.start" for m in self.sent)
        if message["type"] == "http.response.start" and started:
            raise RuntimeError("Unexpected ASGI message 'http.response.start'")
        self.sent.append(message)


def cancelled_while_running(scope_type: str, *, begin_answer: bool) -> tuple[Connection, bool]:
    """Run an app that waits for ever (having begun its answer, if `begin_answer`) behind
    `AnswerWhenStopped`, cancel it as uvicorn's stop does; the connection, and whether the
    request ended cancelled."""
    connection = Connection()

    async def endless(_scope: Any, _receive: Any, send: Any) -> None:
        if begin_answer:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        running.set()
        await asyncio.Event().wait()

    async def main() -> bool:
        scope = {"type": scope_type, "method": "POST", "path": "/carts/c/checkout"}
        task = asyncio.create_task(
            AnswerWhenStopped(endless)(scope, connection.receive, connection.send)
        )
        await running.wait()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    running = asyncio.Event()
    return connection, asyncio.run(main())


def test_a_request_cut_off_before_its_answer_gets_503_in_json() -> None:
    connection, cancelled = cancelled_while_running("http", begin_answer=False)
    start, body = connection.sent
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert json.loads(body["body"]) == {"detail": STOPPED_DETAIL}
    assert not cancelled  # answered: nothing is left to cancel


def test_a_request_whose_answer_had_begun_ends_cancelled_and_unchanged() -> None:
    connection, cancelled = cancelled_while_running("http", begin_answer=True)
    assert [m["status"] for m in connection.sent] == [200]
    assert cancelled


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
def test_anything_but_an_http_request_is_cancelled_as_it_was(scope_type: str) -> None:
    connection, cancelled = cancelled_while_running(scope_type, begin_answer=False)
    assert connection.sent == []
    assert cancelled
