"""`Idempotency-Key` on the cart's commands, as pure ASGI in front of every command lane.

A POST or DELETE carrying the header runs as the command of that key (see
`application.idempotency`). A repeat is answered with the first answer, marked
`Idempotent-Replayed: true`; the same key with another request answers 422, a repeat while
the first still runs 409 (with `Retry-After`), a malformed key 422. A command that fails
while the store cannot say whether its key was used before answers 503 (with
`Retry-After`), never its own failure, which might not be the first answer. Requests
without the header pass through untouched.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from fastapi import FastAPI
from starlette.responses import JSONResponse

from microservice_connector.cart_service.application.cart_service import CartNotFound
from microservice_connector.cart_service.application.idempotency import (
    IdempotentCommands,
    KeyInFlight,
    KeyReused,
)
from microservice_connector.cart_service.infrastructure.schemas import cart_response
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.idempotency import IdempotencyKeyUsed, RecordedKey
from microservice_connector.eventstore.idempotency_keys import MAX_KEY_LENGTH
from microservice_connector.web.guards import ASGIApp, Message, Receive, Scope, Send
from microservice_connector.web.request_body import handing_on, read_body

log = logging.getLogger(__name__)
HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_HEADER = HEADER.lower().encode()
# Visible ASCII but `"` and `\`, bare or as a Structured Field string (RFC 8941), the form
# the draft gives: `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`.
# A bare key has no `,` either: two header lines folded into one (`a,b`) are not one key.
_CHARS = rf"[!#-\[\]-~]{{1,{MAX_KEY_LENGTH}}}"
_BARE_CHARS = rf"[!#-+\--\[\]-~]{{1,{MAX_KEY_LENGTH}}}"
KEY_PATTERN = rf'^(?:{_BARE_CHARS}|"{_CHARS}")$'
_KEY = re.compile(KEY_PATTERN)
_COMMANDS = frozenset({"POST", "DELETE"})


def parse_idempotency_key(value: str) -> str | None:
    """The key in a header value, bare or quoted; None if malformed."""
    value = value.strip(" \t")
    if not _KEY.fullmatch(value):
        return None
    return value[1:-1] if value.startswith('"') else value


def request_fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests the same request: method, path, query and body."""
    digest = hashlib.sha256(scope["method"].encode())
    for part in (scope["path"].encode(), scope.get("query_string", b""), body):
        digest.update(b"\0%d\0" % len(part))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyKeys:
    """The ASGI layer applying `IdempotentCommands` to POST and DELETE requests."""

    def __init__(self, app: ASGIApp, commands: IdempotentCommands) -> None:
        self._app = app
        self._commands = commands

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _COMMANDS:
            await self._app(scope, receive, send)
            return
        values = [v for name, v in scope.get("headers") or [] if name.lower() == _HEADER]
        if not values:
            await self._app(scope, receive, send)
            return
        key = parse_idempotency_key(values[0].decode("latin-1")) if len(values) == 1 else None
        if key is None:
            await _error(
                scope,
                receive,
                send,
                422,
                f"{HEADER}: one key, 1 to {MAX_KEY_LENGTH} visible "
                'ASCII characters other than `"` and `\\`, in double quotes or bare (then '
                "without `,`)",
            )
            return
        body, first = await read_body(receive)
        replay = handing_on(first, receive)
        fingerprint = request_fingerprint(scope, body)
        try:
            with self._commands.running(key, fingerprint):
                await self._run(key, fingerprint, scope, replay, send)
        except KeyInFlight as exc:
            await _error(scope, receive, send, 409, str(exc), {"Retry-After": "1"})
        except KeyReused as exc:  # another request with this key is running
            await _error(scope, receive, send, 422, str(exc))

    async def _run(
        self, key: str, fingerprint: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        answer = _HeldFailure(send)
        try:
            await self._app(scope, receive, answer)
        except IdempotencyKeyUsed as used:  # decided again, but the store knew the key
            await self._first_answer(used.record, fingerprint, scope, receive, send)
            return
        if not answer.held:
            return
        # The command failed now; it may have been applied before (elsewhere, or before a
        # restart), with an answer to give instead.
        try:
            record = await self._commands.recorded(key)
        except DatabaseUnavailable as exc:  # its failure may not be the first answer
            log.warning("cannot look up idempotency key %r: %s", key, exc)
            detail = f"cannot tell now whether this {HEADER}'s command was applied: {exc}"
            await _error(scope, receive, send, 503, detail, {"Retry-After": "1"})
            return
        if record is None:
            await answer.release()
            return
        await self._first_answer(record, fingerprint, scope, receive, send)

    async def _first_answer(
        self, record: RecordedKey, fingerprint: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            view = await self._commands.first_answer(record, fingerprint)
        except KeyReused as exc:
            await _error(scope, receive, send, 422, str(exc))
            return
        except (DatabaseUnavailable, CartNotFound) as exc:
            await _error(scope, receive, send, 503, f"cannot replay the first answer: {exc}")
            return
        response = cart_response(view)
        response.headers[REPLAYED] = "true"
        await response(scope, receive, send)


class _HeldFailure:
    """A `send` passing a success through and holding back a failure until released."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.held: list[Message] = []
        self._passing = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._passing = message["status"] < 400
        if self._passing:
            await self._send(message)
        else:
            self.held.append(message)

    async def release(self) -> None:
        """Send the failure held back."""
        for message in self.held:
            await self._send(message)


async def _error(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(
        scope, receive, send
    )


_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": "Makes the command safe to retry: applied at most once per key; a repeat "
    f"gets the first answer again, with `{REPLAYED}: true`. 422 if the key was used with "
    "another request or is malformed, 409 while a request with it is still running. Keys "
    "are kept MSC_IDEMPOTENCY_TTL_S seconds (default 24 h).",
    "schema": {"type": "string", "pattern": KEY_PATTERN, "maxLength": MAX_KEY_LENGTH + 2},
}


def document_idempotency_key(app: FastAPI) -> None:
    """Declare the header, and the replay marker, on every command in the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for path in schema.get("paths", {}).values():
            for method, operation in path.items():
                if method.upper() not in _COMMANDS:
                    continue
                operation.setdefault("parameters", []).append(_PARAMETER)
                ok = operation.get("responses", {}).get("200")
                if ok is not None:
                    ok.setdefault("headers", {})[REPLAYED] = {
                        "description": "`true` when this answer repeats a command's first one",
                        "schema": {"type": "string", "enum": ["true"]},
                    }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
