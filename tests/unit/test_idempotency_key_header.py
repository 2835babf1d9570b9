"""The `Idempotency-Key` header's form, what makes two requests the same, and the rule that
a key's command runs once at a time."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from pydantic import ValidationError

from microservice_connector.cart_service.application.idempotency import (
    IdempotentCommands,
    KeyInFlight,
    KeyReused,
    pending_key,
)
from microservice_connector.cart_service.infrastructure.idempotency_http import (
    IdempotencyKeys,
    parse_idempotency_key,
    request_fingerprint,
)
from microservice_connector.eventstore.idempotency import RecordedKey
from microservice_connector.settings import Settings
from microservice_connector.web.guards import Receive, Scope, Send


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        (' "a" ', "a"),
        ("k" * 255, "k" * 255),
        ('"' + "k" * 255 + '"', "k" * 255),
        ("!#$%&'()*+-./:;<=>?@[]^_`{|}~", "!#$%&'()*+-./:;<=>?@[]^_`{|}~"),
        ('"a,b"', "a,b"),  # quoted, a comma is part of the key
    ],
)
def test_a_key_is_accepted_bare_or_as_a_structured_field_string(value: str, key: str) -> None:
    assert parse_idempotency_key(value) == key


@pytest.mark.parametrize(
    "value",
    [
        *("", '""', " ", "k" * 256, '"' + "k" * 256 + '"', "a b", '"a', 'a"', '"a\\"b"'),
        *("a\\b", "é", "a,b", "k1, k2"),  # bare: two header lines folded into one
    ],
)
def test_a_malformed_key_is_refused(value: str) -> None:
    assert parse_idempotency_key(value) is None


def _scope(method: str, path: str, query: bytes = b"") -> Scope:
    return {"method": method, "path": path, "query_string": query}


def test_the_fingerprint_tells_requests_apart_by_method_path_query_and_body() -> None:
    base = request_fingerprint(_scope("POST", "/carts/c1/items"), b'{"quantity": 1}')
    assert base == request_fingerprint(_scope("POST", "/carts/c1/items"), b'{"quantity": 1}')
    others = [
        request_fingerprint(_scope("DELETE", "/carts/c1/items"), b'{"quantity": 1}'),
        request_fingerprint(_scope("POST", "/carts/c2/items"), b'{"quantity": 1}'),
        request_fingerprint(_scope("POST", "/carts/c1/items", b"x=1"), b'{"quantity": 1}'),
        request_fingerprint(_scope("POST", "/carts/c1/items"), b'{"quantity": 2}'),
        # The parts are delimited: moving bytes from one to the next is another request.
        request_fingerprint(_scope("POST", "/carts/c1/items", b"{"), b'"quantity": 1}'),
    ]
    assert base not in others
    assert len(set(others)) == len(others)


class _NoKeys:
    def find(self, key: str) -> RecordedKey | None:
        return None

    def purge_expired(self) -> int:
        return 0


async def _no_cart(cart_id: str, version: int) -> object:
    raise AssertionError("no replay expected")


def test_a_key_is_claimed_while_its_command_runs_and_carried_to_the_store() -> None:
    commands = IdempotentCommands(_NoKeys(), _no_cart, ttl=timedelta(hours=1))  # type: ignore[arg-type]
    assert pending_key.get() is None
    with commands.running("k", "f1"):
        pending = pending_key.get()
        assert pending is not None
        assert (pending.key, pending.fingerprint) == ("k", "f1")
        assert pending.ttl == timedelta(hours=1)  # counted from the commit, not from now
        with pytest.raises(KeyInFlight), commands.running("k", "f1"):
            pass
        with pytest.raises(KeyReused), commands.running("k", "f2"):  # another request
            pass
        with commands.running("other", "f3"):  # another key runs alongside
            pass
    assert pending_key.get() is None
    with commands.running("k", "f1"):  # free again once the first finished
        pass


async def test_while_the_first_runs_a_repeat_answers_409_and_another_request_422() -> None:
    entered, finish = asyncio.Event(), asyncio.Event()

    async def slow_command(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await finish.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    commands = IdempotentCommands(_NoKeys(), _no_cart)  # type: ignore[arg-type]
    app = IdempotencyKeys(slow_command, commands)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cart") as client:
        headers = {"Idempotency-Key": '"k1"'}
        first = asyncio.create_task(client.post("/carts/c1/checkout", headers=headers))
        await asyncio.wait_for(entered.wait(), 10)
        repeat = await client.post("/carts/c1/checkout", headers=headers)
        assert repeat.status_code == 409
        assert repeat.headers["retry-after"] == "1"
        assert "still being processed" in repeat.json()["detail"]
        other = await client.post("/carts/c2/checkout", headers=headers)  # another request
        assert other.status_code == 422
        assert "different request" in other.json()["detail"]
        finish.set()
        assert (await first).status_code == 200


def test_the_key_lifetime_defaults_to_a_day_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MSC_IDEMPOTENCY_TTL_S", raising=False)
    assert Settings().idempotency_ttl_s == 86_400
    monkeypatch.setenv("MSC_IDEMPOTENCY_TTL_S", "3600")
    assert Settings().idempotency_ttl_s == 3600
    for bad in ("0", "-5", "nope", str(31 * 86_400)):
        monkeypatch.setenv("MSC_IDEMPOTENCY_TTL_S", bad)
        with pytest.raises(ValidationError, match="idempotency_ttl_s"):
            Settings()
