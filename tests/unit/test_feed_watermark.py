"""The feed watermark: how far the broker's deliveries reach without a hole."""

from __future__ import annotations

from microservice_connector.billing_service.infrastructure.feed_watermark import FeedWatermark


def test_it_moves_through_positions_handled_without_a_hole_in_any_order() -> None:
    watermark = FeedWatermark()
    watermark.caught_up_to(10)
    watermark.handled([12, 11, 14])

    assert watermark.through == 12
    watermark.handled([13])
    assert watermark.through == 14


def test_a_hole_holds_it_until_catch_up_passes_the_hole() -> None:
    watermark = FeedWatermark()
    watermark.handled([1, 2, 4, 5])
    assert watermark.through == 2  # 3 never came

    watermark.caught_up_to(3)
    assert watermark.through == 5  # and 4, 5 were held for it


def test_it_never_goes_back() -> None:
    watermark = FeedWatermark()
    watermark.caught_up_to(8)
    watermark.caught_up_to(5)
    watermark.handled([3, 7])

    assert watermark.through == 8


def test_positions_held_past_a_hole_are_bounded() -> None:
    watermark = FeedWatermark(max_ahead=3)
    watermark.handled([5, 6, 7, 8])  # 1-4 never came: more held than allowed, all dropped

    watermark.caught_up_to(4)
    assert watermark.through == 4
    watermark.handled([5])
    assert watermark.through == 5
