"""Every error answers JSON with a human-readable `detail`; no input yields a 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.failures import DataRejected

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """Every error answer: a readable `detail`."""

    detail: str


class InvalidInputBody(ErrorBody):
    """A 422: the readable `detail`, and one entry per invalid field."""

    errors: list[dict[str, Any]] = []


def _error(description: str, model: type[BaseModel] = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


# The error answers any route may give, documented in OpenAPI (pass to `FastAPI(responses=)`).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("a bearer token is required (MSC_API_TOKEN) and was missing or wrong"),
    404: _error("no such resource"),
    409: _error("the resource's state forbids it"),
    413: _error("the body is larger than MSC_MAX_BODY_BYTES"),
    422: _error("malformed input", InvalidInputBody),
    503: _error("a dependency (database, broker) is unreachable"),
}


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
    """Map domain exceptions to statuses; malformed input → 422, database down → 503, data
    the database refused → 500 saying so."""

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

    async def on_refused(_: Request, exc: Exception) -> JSONResponse:
        # The API accepted what the database refused: logged as the defect it is here, and
        # answered 422 with the database's words: the same request would fail the same way.
        log.error("the database refused accepted input: %s", exc)
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # FastAPI could not even parse the body: malformed input
            return JSONResponse(status_code=422, content={"detail": "body: not valid JSON"})
        return JSONResponse(
            status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
        )

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(DatabaseUnavailable, on_unavailable)
    app.add_exception_handler(DataRejected, on_refused)
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
