"""Random ids for events and requests, in the canonical UUID text form."""

from __future__ import annotations

from os import urandom

_VERSION_4 = 0x4 << 76
_VARIANT_RFC_4122 = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62))


def new_id() -> str:
    """A random version-4 UUID from the OS's random source, as `str(uuid.uuid4())` writes
    it, without building a `uuid.UUID` (about 10 µs of an id's 14 here, twice a command)."""
    value = int.from_bytes(urandom(16)) & _KEEP | _VERSION_4 | _VARIANT_RFC_4122
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
