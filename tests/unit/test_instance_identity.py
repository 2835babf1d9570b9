"""Each instance names itself: in every log line and in `msc_instance_info`."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError

from microservice_connector.runtime.logs import configure_logging
from microservice_connector.settings import Settings
from microservice_connector.web.metrics import service_registry


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """What was logged to stderr since the test began; the logging setup is restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield lambda: capsys.readouterr().err
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_instance_id_defaults_to_host_and_pid_and_can_be_set() -> None:
    assert Settings().instance() == f"{socket.gethostname()}-{os.getpid()}"
    assert Settings(instance_id="cart-2").instance() == "cart-2"
    with pytest.raises(ValidationError, match="instance_id"):
        Settings(instance_id="two words")


def test_every_text_log_line_names_the_instance(stderr: Callable[[], str]) -> None:
    configure_logging("text", instance="cart-2")
    logging.getLogger("uvicorn.error").info("started")
    logging.getLogger("microservice_connector.x").warning("relay: %s", "slow")
    lines = stderr().splitlines()
    assert len(lines) == 2
    assert all(" cart-2 " in line for line in lines), lines


def test_every_json_log_line_names_the_instance(stderr: Callable[[], str]) -> None:
    configure_logging("json", instance="billing-1")
    logging.getLogger("a").info("one")
    logging.getLogger("b").error("two", extra={"event_id": "e-1"})
    entries = [json.loads(line) for line in stderr().splitlines()]
    assert [(e["instance"], e["message"]) for e in entries] == [
        ("billing-1", "one"),
        ("billing-1", "two"),
    ]


def test_metrics_carry_an_info_gauge_naming_service_and_instance() -> None:
    text = generate_latest(service_registry("cart", "cart-2")).decode()
    assert 'msc_instance_info{instance_id="cart-2",service="cart"} 1.0' in text
    assert "msc_instance_info" not in generate_latest(service_registry()).decode()
