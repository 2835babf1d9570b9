"""The nats-server `msc up` embeds: fsynced at JetStream's own pace unless
`MSC_NATS_SYNC_ALWAYS` asks for every message (the store at FULL either way), and audited by
both services' relays."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from microservice_connector.runtime.system import System
from support.processes import free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(("sync_always", "expected"), [(None, False), ("true", True)])
def test_the_embedded_nats_server_syncs_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync_always: str | None, expected: bool
) -> None:
    monkeypatch.setenv("MSC_SQLITE_SYNCHRONOUS", "FULL")
    if sync_always is None:
        monkeypatch.delenv("MSC_NATS_SYNC_ALWAYS", raising=False)
    else:
        monkeypatch.setenv("MSC_NATS_SYNC_ALWAYS", sync_always)
    with System(tmp_path, free_port(), free_port()) as system:
        assert system.nats_monitor_url is not None
        varz = httpx.get(f"{system.nats_monitor_url}/varz", timeout=5).json()
        jetstream = varz["jetstream"]["config"]
        assert jetstream.get("sync_always", False) is expected
        assert Path(jetstream["store_dir"]).parent == tmp_path / "nats"
        for port in (system.cart_port, system.billing_port):
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert "# TYPE msc_relay_broker_regressions_total counter" in metrics
            assert "# TYPE msc_relay_republished_rows_total counter" in metrics
