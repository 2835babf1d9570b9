"""SIGKILL under steady HTTP load: the cart service (and with it the relay, between its
publish and its mark), then billing. Every command answered 200 is stored and billed once."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from support.reliability import (
    Load,
    StreamWatch,
    System,
    audit,
    audited,
    report,
    running_system,
)

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

ROUNDS = [
    pytest.param(1, marks=pytest.mark.reliability_smoke, id="1-round"),
    pytest.param(20, marks=pytest.mark.reliability, id="20-rounds"),
]
CARTS = [f"crash-{n}" for n in range(200)]


WINDOW_TRIES = 200  # freezes per round to catch the relay between its publish and its mark


def kill_between_publish_and_mark(system: System, watch: StreamWatch, load: Load) -> bool:
    """Freeze the cart service at moments under load until JetStream holds an event whose
    outbox row is still unmarked, and SIGKILL it right there: the kill then lands between the
    relay's publish and its mark for certain. False (and killed anyway) if no freeze did."""
    for _ in range(WINDOW_TRIES):
        system.cart.freeze()
        if watch.published_unmarked() > 0:
            system.cart.kill()  # a stopped process dies as it stands
            return True
        system.cart.thaw()
        load.wait_for_answers(200, 1)
    system.cart.kill()
    return False


@pytest.mark.parametrize("rounds", ROUNDS)
def test_cart_service_killed_at_random_moments_loses_nothing(tmp_path: Path, rounds: int) -> None:
    rng = random.Random(rounds)
    recover_s = 0.0
    unmarked = 0  # kills that left rows published (acked by JetStream) but not marked
    with running_system(tmp_path) as system:
        watch = StreamWatch(system.nats.url, tmp_path)
        with Load(system.cart.url, CARTS, clients=4, seed=rounds) as load:
            for _ in range(rounds):
                load.wait_for_answers(200, rng.randint(10, 80))  # a random moment under load
                unmarked += kill_between_publish_and_mark(system, watch, load)
                killed = time.monotonic()
                system.cart.start()
                load.wait_for_answers(200, 1)
                recover_s = max(recover_s, time.monotonic() - killed)
            load.wait_for_answers(200, 20)
        result = audit(system, load)
        applied = system.applied()  # billing ran throughout: its counter covers every event

    twice = result.wrong_bills + max(0, int(applied) - result.events)
    report(
        audited(
            f"crash: cart service SIGKILL ({unmarked} mid publish-mark)",
            rounds,
            result,
            load,
            recover_s,
            applied_twice=twice,
        )
    )
    assert (result.lost, twice, load.server_errors()) == (0, 0, 0), load.statuses()
    assert applied == result.events
    assert result.commands > 20 * rounds
    assert unmarked == rounds, "every kill must land between the relay's publish and its mark"


@pytest.mark.parametrize("rounds", ROUNDS)
def test_billing_killed_mid_stream_applies_each_event_once(tmp_path: Path, rounds: int) -> None:
    rng = random.Random(rounds)
    recover_s = 0.0
    with running_system(tmp_path) as system:
        with Load(system.cart.url, CARTS, clients=4, seed=rounds) as load:
            for _ in range(rounds):
                load.wait_for_answers(200, 20)
                before = system.applied()
                # A random moment while billing is applying.
                target = before + rng.randint(1, 60)
                deadline = time.monotonic() + 60
                while system.applied() < target and time.monotonic() < deadline:
                    load.wait_for_answers(200, 1)
                system.billing.kill()
                recover_s = max(recover_s, system.billing.start())
            load.wait_for_answers(200, 20)
        result = audit(system, load)

    report(
        audited(
            "crash: billing SIGKILL mid-stream",
            rounds,
            result,
            load,
            recover_s,
        )
    )
    assert (result.lost, result.wrong_bills, load.server_errors()) == (0, 0, 0), load.statuses()
