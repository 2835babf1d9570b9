"""schemathesis against both services' OpenAPI documents, in process: no generated request
yields a server error or a response that breaks the documented schema, and every command
answered 200 is stored exactly once. Each test measures its own figures."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi

from microservice_connector.billing_service.main import build_billing_app
from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings
from support.nats import NatsServer
from support.processes import wait_for
from support.reliability import Figures, report

pytestmark = [pytest.mark.reliability, pytest.mark.nats]

EXAMPLES = 300  # per operation: about 1,000 requests for each service and mode
MIN_REQUESTS = 500  # a run that sent fewer did not exercise the API
REPLAYED_HEADERS = ("idempotent-replayed",)


@dataclass
class Tally:
    """What one fuzz run sent and how it was answered."""

    requests: int = 0
    server_errors: int = 0
    accepted: list[Any] = field(default_factory=list)  # cases a write route answered 2xx


def _settings(data_dir: Path, nats_url: str) -> Settings:
    return Settings(data_dir=data_dir, nats_url=nats_url, broker="nats")


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _fuzz(
    schema: schemathesis.BaseSchema, mode: GenerationMode, is_write: Callable[[Any], bool]
) -> Tally:
    """Every operation of `schema`, `EXAMPLES` generated cases each, in `mode`; fails with
    every operation's first failure. Starts once the app is ready (its broker connected): a
    `/readyz` answering 503 before that would be a server error that is no fault."""
    _wait_until_ready(schema.app)
    tally, failures = Tally(), []
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing to make invalid

        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            tally.requests += 1
            if mode is GenerationMode.POSITIVE and "Idempotency-Key" in (case.headers or {}):
                # A key generated twice for two different requests is answered 422 by design
                # (the IETF draft): valid in form, not in use. A fresh one keeps that apart.
                case.headers["Idempotency-Key"] = str(uuid.uuid4())
            response = case.call()
            tally.server_errors += response.status_code >= 500
            replayed = any(response.headers.get(name) for name in REPLAYED_HEADERS)
            if 200 <= response.status_code < 300 and is_write(case) and not replayed:
                tally.accepted.append(case)
            case.validate_response(response)

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    return tally


def _wait_until_ready(app: Any) -> None:
    with asgi.get_client(app) as client:
        wait_for(lambda: client.get(f"http://{asgi.HOST}/readyz").status_code == 200, 60, "/readyz")


def _has_inputs(operation: Any) -> bool:
    return bool(list(operation.iter_parameters())) or bool(operation.body)


def _is_cart_command(case: Any) -> bool:
    return case.method.upper() in {"POST", "DELETE"} and case.path.startswith("/carts/")


def _is_price_change(case: Any) -> bool:
    return case.method.upper() == "PUT" and case.path.startswith("/prices/")


def _stored_events(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "events.db") as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_cart_api_answers_every_generated_request_by_its_schema(
    tmp_path: Path, mode: GenerationMode, nats_server: NatsServer
) -> None:
    app = build_cart_app(_settings(tmp_path, nats_server.url))
    tally = _fuzz(schemathesis.openapi.from_asgi("/openapi.json", app), mode, _is_cart_command)
    # Every command answered 200 appends exactly one event.
    commands, events = len(tally.accepted), _stored_events(tmp_path)
    lost, twice = max(0, commands - events), max(0, events - commands)
    report(
        Figures(
            f"schemathesis: cart API, {mode.value}",
            1,
            commands,
            events,
            lost,
            twice,
            tally.server_errors,
            0,
        )
    )
    assert tally.requests >= MIN_REQUESTS
    assert (tally.server_errors, lost, twice) == (0, 0, 0)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_billing_api_answers_every_generated_request_by_its_schema(
    tmp_path: Path, mode: GenerationMode, nats_server: NatsServer
) -> None:
    app = build_billing_app(_settings(tmp_path, nats_server.url))
    tally = _fuzz(schemathesis.openapi.from_asgi("/openapi.json", app), mode, _is_price_change)
    # The last accepted price of each item is the one billing now lists.
    last: dict[str, int] = {}
    for case in tally.accepted:
        # schemathesis keeps path parameters percent-encoded, as sent.
        last[unquote(case.path_parameters["item_id"])] = int(case.body["unit_price_cents"])
    with asgi.get_client(app) as client:
        listed = client.get(f"http://{asgi.HOST}/prices").json()
    wrong = {item: (cents, _price(listed, item)) for item, cents in last.items()}
    wrong = {item: pair for item, pair in wrong.items() if pair[0] != pair[1]}
    lost = len(wrong)
    report(
        Figures(
            f"schemathesis: billing API, {mode.value}",
            1,
            len(tally.accepted),
            len(last),
            lost,
            None,
            tally.server_errors,
            0,
        )
    )
    assert tally.requests >= MIN_REQUESTS
    assert (tally.server_errors, lost) == (0, 0)


def _price(listed: Any, item_id: str) -> int | None:
    """`item_id`'s price in a `GET /prices` answer (a map, or a list of price objects)."""
    if isinstance(listed, dict):
        entry = listed.get("prices", listed).get(item_id)
    else:
        entry = next((p for p in listed if p.get("item_id") == item_id), None)
    if isinstance(entry, dict):
        return int(entry["unit_price_cents"])
    return None if entry is None else int(entry)
