"""The shape every id in a path, body or header must have."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import Field

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"

IdField = Annotated[str, Field(pattern=ID_PATTERN, description="1-64 of A-Z a-z 0-9 . _ : -")]


def id_path(description: str) -> Any:
    """A path parameter validated against `ID_PATTERN`."""
    return Path(pattern=ID_PATTERN, description=description)
