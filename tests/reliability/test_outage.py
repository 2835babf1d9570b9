"""The broker stopped under load: commands keep succeeding into the outbox, and when it is
back the backlog drains; nothing lost, nothing applied twice. Reports the drain time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from support.processes import wait_for
from support.reliability import Figures, Load, audit, report, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


@pytest.mark.parametrize(
    "outage_s",
    [
        pytest.param(3, marks=pytest.mark.reliability_smoke, id="3s"),
        pytest.param(30, marks=pytest.mark.reliability, id="30s"),
    ],
)
def test_broker_outage_under_load_drains_and_loses_nothing(tmp_path: Path, outage_s: int) -> None:
    carts = [f"outage-{n}" for n in range(200)]
    with running_system(tmp_path) as system, Load(system.cart.url, carts, clients=4) as load:
        load.wait_for_answers(200, 50)
        system.nats.stop()
        stopped = time.monotonic()
        during = load.count(200)
        # Keep the broker away for `outage_s` while the load goes on.
        wait_for(lambda: time.monotonic() - stopped >= outage_s, outage_s + 5, "the outage")
        during = load.count(200) - during
        backlog = system.pending_outbox()
        system.nats.start()
        back = time.monotonic()
        load.wait_for_answers(200, 50)
        load.stop()
        wait_for(lambda: system.pending_outbox() == 0, 120, "the outbox to drain")
        result = audit(system, load, since=back)
        applied = system.applied()
    report(
        Figures(
            f"broker outage {outage_s} s ({during} commands, backlog {backlog:.0f}, "
            f"drained in {result.drain_s:.1f} s)",
            1,
            result.commands,
            result.events,
            result.lost,
            result.wrong_bills + max(0, int(applied) - result.events),
            load.server_errors(),
            result.drain_s,
        )
    )
    assert during > 0  # commands kept succeeding while the broker was down
    assert (result.lost, result.wrong_bills, load.server_errors()) == (0, 0, 0), load.statuses()
    assert applied == result.events
