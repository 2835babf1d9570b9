"""Request ids are random version-4 UUIDs, event ids time-ordered version-7 UUIDs (RFC 9562),
both in canonical form, and neither repeats."""

from __future__ import annotations

import time
import uuid

from microservice_connector.events.new_ids import new_event_id, new_id


def test_an_id_is_a_canonical_version_4_uuid() -> None:
    for _ in range(1000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_ids_do_not_repeat() -> None:
    assert len({new_id() for _ in range(100_000)}) == 100_000


def test_an_event_id_is_a_canonical_version_7_uuid_of_the_current_millisecond() -> None:
    for _ in range(1000):
        before = time.time_ns() // 1_000_000
        text = new_event_id()
        after = time.time_ns() // 1_000_000
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
        assert before <= parsed.int >> 80 <= after


def test_event_ids_do_not_repeat_and_later_ones_sort_later() -> None:
    ids = []
    for _ in range(20):
        ids.append(new_event_id())
        millisecond = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 == millisecond:
            pass  # the next id is made in a later millisecond
    assert ids == sorted(ids)
    assert len({new_event_id() for _ in range(100_000)}) == 100_000
