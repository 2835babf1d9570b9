"""A JetStream publish acknowledgement is read as the broker meant it: its stream, sequence
and duplicate flag; a refusal raises JetStream's `APIError`; anything else is a `ValueError`
that the publisher turns into that message's error."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.js.errors import APIError

from microservice_connector.messaging.nats.acks import NoStream, read_ack


def answer(data: bytes) -> Msg:
    return Msg(_client=None, subject="_INBOX.ack.1", data=data)  # type: ignore[arg-type]


def test_an_acknowledgement_gives_its_stream_sequence_and_duplicate_flag() -> None:
    ack = read_ack(answer(b'{"stream":"CART","seq":42,"duplicate":true}'))
    assert (ack.stream, ack.seq, ack.duplicate) == ("CART", 42, True)
    assert not read_ack(answer(b'{"stream":"CART","seq":43}')).duplicate


def test_a_refusal_raises_jetstream_s_error_with_its_code() -> None:
    refusal = b'{"error":{"code":400,"err_code":10054,"description":"message too large"}}'
    with pytest.raises(APIError) as raised:
        read_ack(answer(refusal))
    assert raised.value.err_code == 10054


@pytest.mark.parametrize("data", [b"not json", b'{"stream":"CART"}', b'{"seq":"one"}', b"[]"])
def test_an_answer_that_is_no_acknowledgement_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"JSON|stream or sequence|Expected|malformed"):
        read_ack(answer(data))


def test_no_responders_is_told_apart_from_a_refusal_without_its_code() -> None:
    no_stream = Msg(_client=None, subject="_INBOX.ack.1", data=b"", headers={"Status": "503"})  # type: ignore[arg-type]
    with pytest.raises(NoStream):
        read_ack(no_stream)
    with pytest.raises(KeyError) as raised:  # nats-py's reading of an error without its code
        read_ack(answer(b'{"error":{"description":"odd"}}'))
    assert not isinstance(raised.value, NoStream)  # not reported as "no stream holds subject"
