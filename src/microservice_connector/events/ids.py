"""The one id rule: what an aggregate or item id may look like, wherever it comes from
(an HTTP path or body, a message header), and how wide a stored id column must be."""

from __future__ import annotations

import re
from urllib.parse import quote

MAX_ID_LENGTH = 64
ID_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MAX_ID_LENGTH}}}$"
ID_DESCRIPTION = f"1-{MAX_ID_LENGTH} of A-Z a-z 0-9 . _ : -"
# Stored ids may carry a prefix over an API id (`inv-<cart id>`, `price-<item id>`).
STORED_ID_LENGTH = 2 * MAX_ID_LENGTH

_ID = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    """Whether `value` is an id the API would accept."""
    return _ID.fullmatch(value) is not None


def path_segment(value: str) -> str:
    """`value` as one URL path segment that no client folds into the path around it: what
    is not unreserved percent-encoded, and the ids `.` and `..` spelled `%2E`."""
    segment = quote(value, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment
