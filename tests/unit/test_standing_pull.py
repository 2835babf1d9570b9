"""`StandingPull` reads what the server says about its requests: an expired or cut request is
renewed, an error is raised (after the messages that came before it), and a message of the
stream is a message whatever its headers say."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError, ServiceUnavailableError

from microservice_connector.messaging.nats.standing_pull import StandingPull

NEXT = "$JS.API.CONSUMER.MSG.NEXT.CART.billing"
INBOX = "_INBOX.pull"


class FakeInbox:
    """The inbox subscription nats-py keeps under a pull subscription."""

    def __init__(self) -> None:
        self._pending_queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._pending_size = 0

    def arrive(self, message: Msg) -> None:
        self._pending_size += len(message.data)
        self._pending_queue.put_nowait(message)


class FakePull:
    def __init__(self) -> None:
        self._sub = FakeInbox()
        self._nms = NEXT
        self._deliver = INBOX


class FakeClient:
    """Records the pull requests sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def publish(self, subject: str, payload: bytes, reply: str) -> None:
        assert (subject, reply) == (NEXT, INBOX)
        self.requests.append(json.loads(payload))


def message(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    return Msg(
        None,
        subject=INBOX,
        reply=f"$JS.ACK.CART.billing.1.{len(data)}.1.0.0",
        data=data,
        headers=headers,
    )  # type: ignore[arg-type]


def status(code: str, description: str = "") -> Msg:
    return Msg(
        None,
        subject=INBOX,
        reply="",
        data=b"",
        headers={"Status": code, "Description": description},
    )  # type: ignore[arg-type]


def standing() -> tuple[StandingPull, FakePull, FakeClient]:
    pull, client = FakePull(), FakeClient()
    assert StandingPull.supported(pull)  # type: ignore[arg-type]
    return StandingPull(client, pull), pull, client  # type: ignore[arg-type]


async def test_a_request_is_opened_once_and_renewed_when_half_of_it_arrived() -> None:
    pull_, pull, client = standing()
    for number in range(3):
        pull._sub.arrive(message(b"%d" % number))

    assert [m.data for m in await pull_.take(4, wait=1.0)] == [b"0", b"1", b"2"]
    assert client.requests == [{"batch": 4, "expires": 1_000_000_000}]
    assert pull._sub._pending_size == 0

    pull._sub.arrive(message(b"3"))
    await pull_.take(4, wait=1.0)  # only 1 of 4 left open: ask for more first
    assert len(client.requests) == 2


@pytest.mark.parametrize("code", ["408", "409"])
async def test_an_expired_or_cut_request_is_renewed_on_the_next_take(code: str) -> None:
    pull_, pull, client = standing()
    pull._sub.arrive(status(code, "Request Timeout"))
    pull._sub.arrive(message(b"after"))

    assert [m.data for m in await pull_.take(100, wait=1.0)] == [b"after"]
    await pull_.take(100, wait=0.01)

    assert len(client.requests) == 2


async def test_heartbeats_and_no_messages_are_not_messages() -> None:
    pull_, pull, _ = standing()
    pull._sub.arrive(status("100", "Idle Heartbeat"))
    pull._sub.arrive(status("404", "No Messages"))

    assert await pull_.take(10, wait=0.01) == []


async def test_an_error_is_raised_when_nothing_came_before_it() -> None:
    pull_, pull, _ = standing()
    pull._sub.arrive(status("503"))

    with pytest.raises(ServiceUnavailableError):
        await pull_.take(10, wait=1.0)


async def test_an_error_after_messages_hands_them_over_and_asks_again() -> None:
    pull_, pull, client = standing()
    pull._sub.arrive(message(b"kept"))
    pull._sub.arrive(status("400", "Bad Request"))

    assert [m.data for m in await pull_.take(10, wait=1.0)] == [b"kept"]
    pull._sub.arrive(status("400", "Bad Request"))
    with pytest.raises(APIError):
        await pull_.take(10, wait=1.0)
    assert len(client.requests) == 2  # the next take asked anew, and met the error


async def test_a_stream_message_with_a_status_header_is_a_message() -> None:
    pull_, pull, _ = standing()
    pull._sub.arrive(message(b"mine", {"Status": "503"}))

    assert [m.data for m in await pull_.take(10, wait=1.0)] == [b"mine"]


async def test_a_take_with_nothing_to_take_returns_nothing_after_its_wait() -> None:
    pull_, _, client = standing()
    started = asyncio.get_running_loop().time()

    assert await pull_.take(10, wait=0.05) == []

    assert asyncio.get_running_loop().time() - started >= 0.05
    assert client.requests[0]["batch"] == 10


def test_a_pull_subscription_without_nats_pys_inbox_is_not_supported() -> None:
    assert not StandingPull.supported(object())  # type: ignore[arg-type]
