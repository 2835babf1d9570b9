"""Event and request ids are random version-4 UUIDs in canonical form, and do not repeat."""

from __future__ import annotations

import uuid

from microservice_connector.cart_service.application.new_ids import new_id


def test_an_id_is_a_canonical_version_4_uuid() -> None:
    for _ in range(1000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_ids_do_not_repeat() -> None:
    assert len({new_id() for _ in range(100_000)}) == 100_000
