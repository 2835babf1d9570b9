"""Which refused outbox rows a relay holds back, and for how long."""

from __future__ import annotations

from microservice_connector.eventstore.held_back import LONGEST_RETRY_S, HeldBack


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_held_row_waits_its_delay_then_is_no_longer_held() -> None:
    clock = Clock()
    held = HeldBack(clock)

    assert held.hold(7, attempts=1) == 1.0
    assert held.now_held() == [7]

    clock.now += 0.999
    assert held.now_held() == [7]
    clock.now += 0.001
    assert held.now_held() == []


def test_the_delay_doubles_with_each_attempt_up_to_five_minutes() -> None:
    held = HeldBack(Clock())

    delays = [held.hold(1, attempts) for attempts in (1, 2, 3, 4, 9, 10, 500)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 256.0, LONGEST_RETRY_S, LONGEST_RETRY_S]
    assert LONGEST_RETRY_S == 300.0
