"""Ids for events and requests, in the canonical UUID text form."""

from __future__ import annotations

from os import urandom
from time import time_ns

_VERSION_4 = 0x4 << 76
_VERSION_7 = 0x7 << 76
_VARIANT_RFC_4122 = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62))


def new_id() -> str:
    """A random version-4 UUID from the OS's random source, as `str(uuid.uuid4())` writes
    it, without building a `uuid.UUID` (about 10 µs of an id's 14 here)."""
    return _canonical(int.from_bytes(urandom(16)) & _KEEP | _VERSION_4 | _VARIANT_RFC_4122)


def new_event_id() -> str:
    """A version-7 UUID (RFC 9562): the Unix time in milliseconds, then 74 random bits, so
    an id made in a later millisecond sorts later (within one, in no order). Stored ids are
    indexed (`events.event_id`, `outbox.event_id`): a random one lands on a random page of
    each index, one page written per event, while these land on the last pages, shared by
    the events committed together."""
    milliseconds = time_ns() // 1_000_000
    value = (milliseconds << 80) | int.from_bytes(urandom(10))
    return _canonical(value & _KEEP | _VERSION_7 | _VARIANT_RFC_4122)


def _canonical(value: int) -> str:
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
