"""`/healthz` (the process answers) and `/readyz` (its dependencies answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 2.0


def health_router(checks: Mapping[str, Check]) -> APIRouter:
    """Routes answering liveness always, readiness only when every check passes in time."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results = {name: await _run(check) for name, check in checks.items()}
        failing = {name: reason for name, reason in results.items() if reason != "ok"}
        if failing:
            detail = "not ready: " + "; ".join(f"{n}: {r}" for n, r in failing.items())
            return JSONResponse(status_code=503, content={"detail": detail, "checks": results})
        return JSONResponse(status_code=200, content={"status": "ready", "checks": results})

    return router


async def _run(check: Check) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return "ok"
