"""Every error answers JSON with a human-readable `detail`; no input yields a 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from microservice_connector.eventstore.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One readable sentence per invalid field, e.g. `quantity: must be <= 10000`."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append("body: not valid JSON")
            continue
        location = [str(p) for p in error.get("loc", ()) if p not in ("body", "path", "query")]
        where = ".".join(location) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, statuses: dict[type[Exception], int]) -> None:
    """Map domain exceptions to statuses; malformed input → 422, database down → 503."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        safe = [{k: e.get(k) for k in ("loc", "msg", "type")} for e in errors]
        detail = describe_validation_errors(errors)
        content_type = request.headers.get("content-type", "")
        if any(tuple(e.get("loc", ())) == ("body",) for e in errors) and "json" not in content_type:
            detail += "; send a JSON body with Content-Type: application/json"
        return JSONResponse(status_code=422, content={"detail": detail, "errors": safe})

    async def on_unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DatabaseUnavailable, on_unavailable)
    for exc_type, status in statuses.items():
        app.add_exception_handler(exc_type, _answer_with(status))
    app.add_exception_handler(Exception, _internal_error)


def _answer_with(status: int) -> Any:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    return handler


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "internal error; see the service log"})
