"""A relay never claims a row again while its mark is on the way, nor from a read that began
before the mark landed; a row whose mark failed is claimable again by later reads."""

from __future__ import annotations

from microservice_connector.eventstore.marks_in_flight import MarksInFlight


def test_a_row_on_its_way_to_its_mark_is_not_claimed_again() -> None:
    marks = MarksInFlight()
    marks.started([1, 2])
    assert marks.claimable([1, 2, 3], marks.begin_claim()) == [3]


def test_a_read_begun_before_a_mark_landed_does_not_take_its_rows() -> None:
    marks = MarksInFlight()
    marks.started([1])
    seen = marks.begin_claim()  # this claim reads while the mark is on its way
    marks.landed([1])
    assert marks.claimable([1, 2], seen) == [2]  # its read may show row 1 still pending


def test_a_read_begun_after_a_mark_landed_or_failed_may_take_the_row() -> None:
    marks = MarksInFlight()
    marks.started([1])
    marks.landed([1])  # a failed mark lands too: the row is pending again
    assert marks.claimable([1], marks.begin_claim()) == [1]


def test_a_claim_skips_each_mark_on_its_way_as_one_span_until_it_lands() -> None:
    marks = MarksInFlight()
    marks.started([4, 5, 6, 9])  # row 7 and 8 failed: they wait for this mark to land
    marks.started([10, 11])
    assert marks.spans_on_the_way() == [(4, 9), (10, 11)]
    marks.landed([4, 5, 6, 9])
    assert marks.spans_on_the_way() == [(10, 11)]
    marks.landed([10, 11])
    marks.landed([12])  # never started: nothing to forget
    assert marks.spans_on_the_way() == []
