"""Integers in JSON bodies as JSON Schema means them: `3` and `3.0` are integers; `3.5`,
`"3"` and `true` are not. Use as `Annotated[int, Field(strict=True, ...), INTEGRAL]`."""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator

from microservice_connector.events.numbers import MAX_SQL_INT

__all__ = ["INTEGRAL", "MAX_SQL_INT"]


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


INTEGRAL = BeforeValidator(_integral)
