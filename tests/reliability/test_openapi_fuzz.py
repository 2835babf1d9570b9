"""schemathesis against both services' OpenAPI documents, in process: no generated request
yields a server error or a response that breaks the documented schema."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

EXAMPLES = 300  # per operation: over 1,000 requests for each service
REQUESTS: Counter[str] = Counter()
SERVER_ERRORS: Counter[str] = Counter()


def _settings(data_dir: Path, nats_url: str) -> Settings:
    return Settings(data_dir=data_dir, nats_url=nats_url, broker="nats")


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _fuzz(service: str, schema: schemathesis.BaseSchema, mode: GenerationMode) -> None:
    """Every operation of `schema`, `EXAMPLES` generated cases each, in `mode`; fails with
    every operation's first failure. Starts once the app is ready (its broker connected): a
    `/readyz` answering 503 before that would be a server error that is no fault."""
    _wait_until_ready(schema.app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing to make invalid

        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            REQUESTS[service] += 1
            if mode is GenerationMode.POSITIVE and "Idempotency-Key" in (case.headers or {}):
                # A key generated twice for two different requests is answered 422 by design
                # (the IETF draft): valid in form, not in use. A fresh one keeps that apart.
                case.headers["Idempotency-Key"] = str(uuid.uuid4())
            response = case.call()
            SERVER_ERRORS[service] += response.status_code >= 500
            case.validate_response(response)

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def _wait_until_ready(app: Any) -> None:
    with asgi.get_client(app) as client:
        wait_for(lambda: client.get(f"http://{asgi.HOST}/readyz").status_code == 200, 60, "/readyz")


def _has_inputs(operation: Any) -> bool:
    return bool(list(operation.iter_parameters())) or bool(operation.body)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_cart_api_answers_every_generated_request_by_its_schema(
    tmp_path: Path, mode: GenerationMode, nats_server: NatsServer
) -> None:
    app = build_cart_app(_settings(tmp_path, nats_server.url))
    _fuzz("cart", schemathesis.openapi.from_asgi("/openapi.json", app), mode)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_billing_api_answers_every_generated_request_by_its_schema(
    tmp_path: Path, mode: GenerationMode, nats_server: NatsServer
) -> None:
    app = build_billing_app(_settings(tmp_path, nats_server.url))
    _fuzz("billing", schemathesis.openapi.from_asgi("/openapi.json", app), mode)


@pytest.fixture(scope="module", autouse=True)
def _figures() -> Iterator[None]:
    yield
    for service, requests in REQUESTS.items():
        report(
            Figures(f"schemathesis: {service} API", 1, requests, 0, 0, 0, SERVER_ERRORS[service], 0)
        )


@pytest.mark.parametrize("service", ["cart", "billing"])
def test_each_api_got_at_least_1000_generated_requests(service: str) -> None:
    assert REQUESTS[service] >= 1000, REQUESTS
    assert SERVER_ERRORS[service] == 0
