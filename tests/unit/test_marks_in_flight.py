"""A relay never claims a row again while its mark is on the way, nor from a read that began
before the mark landed; a row whose mark failed is claimable again by later reads."""

from __future__ import annotations

from microservice_connector.eventstore.marks_in_flight import MarksInFlight
from microservice_connector.eventstore.outbox import id_spans


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


def test_the_rows_on_their_way_are_given_to_a_claim_as_spans_until_their_marks_land() -> None:
    marks = MarksInFlight()
    marks.started([4, 5, 6, 9])
    marks.started([10, 11])
    assert marks.spans_on_the_way() == [(4, 6), (9, 9), (10, 11)]
    marks.landed([4, 5, 6, 9])
    assert marks.spans_on_the_way() == [(10, 11)]
    marks.landed([10, 11])
    assert marks.spans_on_the_way() == []


def test_ids_make_the_fewest_spans_of_consecutive_ids() -> None:
    assert id_spans([9, 3, 5, 4, 9, 12, 13]) == [(3, 5), (9, 9), (12, 13)]
    assert id_spans([]) == []
