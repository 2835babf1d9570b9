"""The broker gone under load: commands keep succeeding into the outbox, and when it is back
the backlog drains; nothing lost, nothing applied twice. Reports the drain time.

On NATS the `nats-server` process is stopped and started again (its file store keeps the
streams). On Kafka, Tansu is *not* stopped: this Tansu build stores only in memory (its
`--storage-engine` takes `memory://` or `s3://`; the postgres and sqlite engines are not
compiled in), so a restart would come back empty, as no durable Kafka does. The outage is
instead the network cut: a `TcpProxy` in front of Tansu drops every connection and refuses
new ones for the whole outage, then accepts them again, with Tansu's data intact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import pytest

from support.processes import wait_for
from support.reliability import Load, audit, audited, report, running_system

pytestmark = [pytest.mark.e2e]


@pytest.mark.parametrize(
    ("broker", "outage_s"),
    [
        pytest.param("nats", 3, marks=[pytest.mark.reliability_smoke, pytest.mark.nats]),
        pytest.param("nats", 30, marks=[pytest.mark.reliability, pytest.mark.nats]),
        pytest.param("kafka", 30, marks=[pytest.mark.reliability, pytest.mark.kafka]),
    ],
    ids=["nats-3s", "nats-30s", "kafka-30s"],
)
def test_broker_outage_under_load_drains_and_loses_nothing(
    tmp_path: Path, broker: Literal["nats", "kafka"], outage_s: int
) -> None:
    carts = [f"outage-{n}" for n in range(200)]
    with (
        running_system(tmp_path, broker_kind=broker) as system,
        Load(system.cart.url, carts, clients=4) as load,
    ):
        load.wait_for_answers(200, 50)
        system.stop_broker()
        stopped = time.monotonic()
        during = load.count(200)
        # Keep the broker away for `outage_s` while the load goes on.
        wait_for(lambda: time.monotonic() - stopped >= outage_s, outage_s + 5, "the outage")
        during = load.count(200) - during
        backlog = system.pending_outbox()
        system.start_broker()
        back = time.monotonic()
        load.wait_for_answers(200, 50)
        load.stop()
        wait_for(lambda: system.pending_outbox() == 0, 120, "the outbox to drain")
        result = audit(system, load, since=back)
        applied = system.applied()
    report(
        audited(
            f"{broker} outage {outage_s} s ({during} commands, backlog {backlog:.0f}, "
            f"drained in {result.drain_s:.1f} s)",
            1,
            result,
            load,
            result.drain_s,
            applied_twice=result.wrong_bills + max(0, int(applied) - result.events),
        )
    )
    assert during > 0  # commands kept succeeding while the broker was down
    assert (result.lost, result.wrong_bills, load.server_errors()) == (0, 0, 0), load.statuses()
    assert applied == result.events
