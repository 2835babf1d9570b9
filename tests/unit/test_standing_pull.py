"""`StandingPull` keeps what it asks for bounded and reads what the server says about its
requests: an expired or cut request is asked for again (not in a tight loop), a refusal is
raised (after the messages that came before it), a reconnect forgets the open requests, and
a message of the stream is a message whatever its headers say."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError, ServiceUnavailableError

from microservice_connector.messaging.nats.standing_pull import RENEW_MARGIN_S, StandingPull

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
    """Records the pull requests sent; `answer` (if set) is what the server says to each."""

    def __init__(self, inbox: FakeInbox) -> None:
        self.requests: list[dict[str, Any]] = []
        self.asked_at: list[float] = []
        self.is_connected = True
        self.stats = {"reconnects": 0}
        self.answer: Msg | None = None
        self._inbox = inbox

    async def publish(self, subject: str, payload: bytes, reply: str) -> None:
        assert (subject, reply) == (NEXT, INBOX)
        self.requests.append(json.loads(payload))
        self.asked_at.append(asyncio.get_running_loop().time())
        if self.answer is not None:
            self._inbox.arrive(self.answer)


def message(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    reply = f"$JS.ACK.CART.billing.1.{len(data)}.1.0.0"
    return Msg(None, subject=INBOX, reply=reply, data=data, headers=headers)  # type: ignore[arg-type]


def status(code: str, description: str = "", unfilled: int | None = None) -> Msg:
    headers = {"Status": code, "Description": description}
    if unfilled is not None:
        headers["Nats-Pending-Messages"] = str(unfilled)
    return Msg(None, subject=INBOX, reply="", data=b"", headers=headers)  # type: ignore[arg-type]


def standing() -> tuple[StandingPull, FakeInbox, FakeClient]:
    pull = FakePull()
    client = FakeClient(pull._sub)
    assert StandingPull.supported(pull)  # type: ignore[arg-type]
    return StandingPull(client, pull), pull._sub, client  # type: ignore[arg-type]


async def test_it_asks_again_once_no_more_than_half_a_batch_is_asked_for() -> None:
    pull, inbox, client = standing()
    for number in range(3):
        inbox.arrive(message(b"%d" % number))

    assert [m.data for m in await pull.take(4, wait=1.0)] == [b"0", b"1", b"2"]
    assert client.requests == [{"batch": 4, "expires": 1_000_000_000}]
    assert inbox._pending_size == 0

    inbox.arrive(message(b"3"))
    await pull.take(4, wait=1.0)  # 1 of 4 still asked for: ask for 4 more first
    assert len(client.requests) == 2


async def test_what_is_asked_for_and_not_taken_stays_within_two_batches() -> None:
    pull, inbox, client = standing()
    batch, taken = 10, 0
    for _ in range(200):  # a trickle: one message a take
        inbox.arrive(message(b"x"))
        taken += len(await pull.take(batch, wait=1.0))

    assert taken == 200
    assert len(client.requests) * batch - taken <= 2 * batch


async def test_a_request_the_server_ended_is_asked_for_again_after_a_pause() -> None:
    pull, inbox, client = standing()
    inbox.arrive(message(b"first"))
    await pull.take(100, wait=1.0)
    inbox.arrive(status("408", "Request Timeout", unfilled=99))  # the rest never came
    inbox.arrive(message(b"after"))

    assert [m.data for m in await pull.take(100, wait=1.0)] == [b"after"]
    assert len(client.requests) == 1  # not at once: a pause first
    assert await pull.take(100, wait=0.5) == []  # nothing comes: it asks after the pause
    assert len(client.requests) >= 2
    assert client.asked_at[1] - client.asked_at[0] >= RENEW_MARGIN_S


async def test_a_request_that_ended_with_enough_still_asked_for_is_waited_on_idly() -> None:
    pull, inbox, client = standing()
    inbox.arrive(message(b"first"))
    await pull.take(100, wait=1.0)  # its request lives 1 s
    inbox.arrive(status("408", "Request Timeout", unfilled=10))  # 89 still asked for
    cpu = time.process_time()

    assert await pull.take(100, wait=0.3) == []

    assert time.process_time() - cpu < 0.1  # waited on the queue, not in a busy loop
    assert len(client.requests) == 1


async def test_a_409_on_every_request_does_not_make_it_ask_in_a_tight_loop() -> None:
    pull, _, client = standing()
    client.answer = status("409", "Leadership Change")

    assert await pull.take(10, wait=0.3) == []

    assert 2 <= len(client.requests) <= 0.3 / RENEW_MARGIN_S + 1


@pytest.mark.parametrize(
    "description",
    ["Exceeded MaxRequestBatch of 5", "Exceeded MaxWaiting", "Consumer is push based"],
)
async def test_a_409_every_request_would_meet_is_raised(description: str) -> None:
    pull, _, client = standing()
    client.answer = status("409", description)

    with pytest.raises(APIError, match=description):
        await pull.take(10, wait=1.0)
    assert len(client.requests) == 1


async def test_no_such_consumer_is_raised_when_nothing_came_before_it() -> None:
    pull, inbox, _ = standing()
    inbox.arrive(status("503"))

    with pytest.raises(ServiceUnavailableError):
        await pull.take(10, wait=1.0)


async def test_an_error_after_messages_hands_them_over_and_asks_again() -> None:
    pull, inbox, client = standing()
    inbox.arrive(message(b"kept"))
    inbox.arrive(status("400", "Bad Request"))

    assert [m.data for m in await pull.take(10, wait=1.0)] == [b"kept"]
    inbox.arrive(status("400", "Bad Request"))
    with pytest.raises(APIError):
        await pull.take(10, wait=1.0)
    assert len(client.requests) == 2  # the next take asked anew, and met the error


async def test_after_a_reconnect_it_asks_again_at_once() -> None:
    pull, inbox, client = standing()
    inbox.arrive(message(b"one"))
    await pull.take(10, wait=1.0)  # 9 still asked for: no need to ask
    client.stats["reconnects"] += 1  # the server may have dropped the request
    inbox.arrive(message(b"two"))

    await pull.take(10, wait=1.0)

    assert len(client.requests) == 2


async def test_while_disconnected_it_asks_nothing_and_takes_nothing() -> None:
    pull, inbox, client = standing()
    client.is_connected = False
    inbox.arrive(message(b"here"))

    assert await pull.take(10, wait=1.0) == []
    assert client.requests == []


async def test_heartbeats_and_no_messages_are_not_messages() -> None:
    pull, inbox, _ = standing()
    inbox.arrive(status("100", "Idle Heartbeat"))
    inbox.arrive(status("404", "No Messages"))

    assert await pull.take(10, wait=0.01) == []


async def test_a_stream_message_with_a_status_header_is_a_message() -> None:
    pull, inbox, _ = standing()
    inbox.arrive(message(b"mine", {"Status": "503"}))

    assert [m.data for m in await pull.take(10, wait=1.0)] == [b"mine"]


async def test_what_was_left_over_is_handed_back_without_statuses() -> None:
    pull, inbox, _ = standing()
    inbox.arrive(message(b"a"))
    inbox.arrive(status("408"))
    inbox.arrive(message(b"bb"))

    assert [m.data for m in pull.left_over()] == [b"a", b"bb"]
    assert inbox._pending_size == 0
    assert inbox._pending_queue.empty()


def test_a_pull_subscription_without_nats_pys_inbox_is_not_supported() -> None:
    assert not StandingPull.supported(object())  # type: ignore[arg-type]
