"""The shape every id in a path, body or header must have (the rule lives in `events.ids`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import Field

from microservice_connector.events.ids import ID_DESCRIPTION, ID_PATTERN

__all__ = ["ID_PATTERN", "IdField", "id_path"]

IdField = Annotated[str, Field(pattern=ID_PATTERN, description=ID_DESCRIPTION)]


def id_path(description: str) -> Any:
    """A path parameter validated against `ID_PATTERN`."""
    return Path(pattern=ID_PATTERN, description=description)
