"""Serving an app: its lifespan hooks, and uvicorn with the project's settings."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn

from microservice_connector.settings import Settings
from microservice_connector.web.stopping import AnswerWhenStopped

Hook = Callable[[], Awaitable[None]]
GRACEFUL_SHUTDOWN_S = 10

log = logging.getLogger(__name__)


def lifespan(
    on_startup: Hook | None, on_shutdown: Hook | None
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that runs `on_startup` before serving and `on_shutdown` after the
    server stopped taking requests (even if startup failed half-way)."""

    @asynccontextmanager
    async def run(_: Any) -> AsyncIterator[None]:
        try:
            if on_startup is not None:
                await on_startup()
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown()

    return run


def serve(
    app: Any,
    settings: Settings,
    *,
    name: str,
    host: str,
    port: int,
    on_exit: Callable[[], None] | None = None,
) -> None:
    """Serve `app` until SIGINT/SIGTERM; in-flight requests get `GRACEFUL_SHUTDOWN_S` to finish,
    then answer 503 (`AnswerWhenStopped`). `on_exit` runs as the signal arrives, so endless
    responses (the live feed) can end first."""
    log.info("%s on http://%s:%d", name, host, port)
    config = uvicorn.Config(
        AnswerWhenStopped(app),
        host=host,
        port=port,
        log_config=None,
        log_level="info",
        access_log=settings.access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    settle_garbage_collector()
    _Server(config, on_exit).run()


def settle_garbage_collector() -> None:
    """Move everything alive now (modules, the app, its wiring: about 100,000 objects in the
    cart service) out of the collector's reach for good. They live as long as the process,
    and a full collection that scanned them all took 10-20 ms of the event loop (a command's
    p99); afterwards it scans only what was made since."""
    gc.collect()
    gc.freeze()


class _Server(uvicorn.Server):
    """uvicorn's server, calling `on_exit` when told to stop, before it waits for responses."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._on_exit is not None:
            self._on_exit()
        super().handle_exit(sig, frame)
