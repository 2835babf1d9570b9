"""The header block the NATS publisher builds itself is, byte for byte, what nats-py's own
`publish` would have sent, and it refuses what `publish` refuses."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.errors import BadSubjectError
from nats.protocol.command import hpub_cmd

from microservice_connector.messaging.nats.wire import (
    WRITE_NOW_LIMIT,
    BadHeaderName,
    header_block,
    send_hpub,
    write_now,
)

HEADER_SETS = [
    {"Nats-Msg-Id": "0b6f4a4e", "event-type": "ItemAdded", "version": "17"},
    {" padded ": "  value with spaces  ", "empty": ""},
    {"multi": "line\r\ninjected: header", "lf": "a\nb", "cr": "a\rb"},
    {"": "an empty name is skipped", "unicode": "Grüße, 価格"},
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
]


async def what_nats_py_sends(headers: dict[str, str]) -> bytes:
    client = Client()
    sent: list[bytes] = []

    async def keep(command: bytes, priority: bool = False) -> None:
        sent.append(command)

    client._send_command = keep  # type: ignore[method-assign]
    client._flush_queue = None
    await client._send_publish("cart.events", "_INBOX.x.1", b"{}", 2, headers)
    return sent[0]


@pytest.mark.parametrize("headers", HEADER_SETS)
async def test_the_block_is_what_nats_py_would_send(headers: dict[str, str]) -> None:
    ours = hpub_cmd("cart.events", "_INBOX.x.1", header_block(headers), b"{}")

    assert ours == await what_nats_py_sends(headers)


@pytest.mark.parametrize("name", ["bad name", "colon:", "new\nline"])
def test_a_header_name_that_is_not_a_token_is_refused(name: str) -> None:
    with pytest.raises(BadHeaderName):
        header_block({name: "x"})


@pytest.mark.parametrize("subject", ["", "cart events", "cart.events\r\nPUB x 1"])
async def test_a_subject_with_blanks_is_refused_before_anything_is_sent(subject: str) -> None:
    with pytest.raises(BadSubjectError):
        await send_hpub(Client(), subject, "_INBOX.x.1", header_block({}), b"{}")


async def test_a_client_without_nats_pys_buffer_gets_a_plain_publish_with_the_headers() -> None:
    class PlainClient:
        """A client that offers only the documented `publish`."""

        def __init__(self) -> None:
            self.published: list[tuple[str, bytes, str, dict[str, str]]] = []

        async def publish(
            self, subject: str, payload: bytes, *, reply: str, headers: dict[str, str]
        ) -> None:
            self.published.append((subject, payload, reply, headers))

    client = PlainClient()
    headers = {"Nats-Msg-Id": "id-1", "event-type": "ItemAdded", "note": "a: b"}

    await send_hpub(client, "cart.events", "_INBOX.x.1", header_block(headers), b"{}")  # type: ignore[arg-type]

    assert client.published == [("cart.events", b"{}", "_INBOX.x.1", headers)]


class _Socket:
    """The asyncio transport under nats-py's: what was written, and how much it holds."""

    def __init__(self, unsent: int) -> None:
        self.unsent = unsent

    def get_write_buffer_size(self) -> int:
        return self.unsent


class _Transport:
    """nats-py's `TcpTransport` as `write_now` sees it."""

    def __init__(self, unsent: int = 0) -> None:
        self.written: list[list[bytes]] = []
        self._io_writer = type("Writer", (), {"transport": _Socket(unsent)})()

    def writelines(self, payload: list[bytes]) -> None:
        self.written.append(list(payload))


def _queued_client(transport: _Transport, *, connected: bool = True) -> Client:
    client = Client()
    client._transport = transport  # type: ignore[assignment]
    client._pending = [b"HPUB one\r\n", b"HPUB two\r\n"]
    client._pending_data_size = 20
    client._status = Client.CONNECTED if connected else Client.RECONNECTING
    return client


def test_write_now_writes_the_queued_commands_once_in_order_and_empties_the_queue() -> None:
    transport = _Transport()
    client = _queued_client(transport)

    assert write_now(client)

    assert transport.written == [[b"HPUB one\r\n", b"HPUB two\r\n"]]
    assert client._pending == []
    assert client._pending_data_size == 0
    assert not write_now(client)  # nothing left: nothing written twice
    assert len(transport.written) == 1


@pytest.mark.parametrize(
    ("transport", "connected"),
    [
        (_Transport(unsent=WRITE_NOW_LIMIT + 1), True),  # backed up: the flusher waits
        (_Transport(), False),  # reconnecting: nats-py keeps the buffer for later
        (type("Opaque", (), {"writelines": _Transport.writelines})(), True),  # size unknown
    ],
    ids=["backed-up", "disconnected", "unknown-transport"],
)
def test_write_now_leaves_the_queue_to_nats_pys_flusher_when_it_should_not_write(
    transport: _Transport, connected: bool
) -> None:
    client = _queued_client(transport, connected=connected)

    assert not write_now(client)

    assert client._pending == [b"HPUB one\r\n", b"HPUB two\r\n"]
    assert client._pending_data_size == 20


def test_write_now_does_nothing_on_a_client_without_nats_pys_buffer() -> None:
    class PlainClient:
        is_connected = True

    assert not write_now(PlainClient())  # type: ignore[arg-type]
