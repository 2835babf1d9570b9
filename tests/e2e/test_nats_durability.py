"""Durability parity: the nats-server `msc up` embeds fsyncs every write when the SQLite stores
do (`MSC_SQLITE_SYNCHRONOUS=FULL`, the default), and both services' relays audit it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from microservice_connector.runtime.system import System
from support.processes import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("synchronous", "sync_always"), [("FULL", True), ("NORMAL", False)])
def test_the_embedded_nats_server_syncs_as_sqlite_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synchronous: str, sync_always: bool
) -> None:
    monkeypatch.setenv("MSC_SQLITE_SYNCHRONOUS", synchronous)
    with System(tmp_path, free_port(), free_port()) as system:
        assert system.nats_monitor_url is not None
        varz = httpx.get(f"{system.nats_monitor_url}/varz", timeout=5).json()
        jetstream = varz["jetstream"]["config"]
        assert jetstream.get("sync_always", False) is sync_always
        assert Path(jetstream["store_dir"]).parent == tmp_path / "nats"
        for port in (system.cart_port, system.billing_port):
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert "# TYPE msc_relay_broker_regressions_total counter" in metrics
            assert "# TYPE msc_relay_republished_rows_total counter" in metrics
