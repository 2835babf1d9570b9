"""The event browser as the cart service serves it: the page at `/ui/` (static files in the
package, no CDN), its settings at `/ui/config.json`, and the live feed `GET /events/stream`."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel
from starlette.staticfiles import StaticFiles

from microservice_connector.cart_service.infrastructure.live_feed import (
    LiveFeed,
    RequestsInFlight,
    Subscription,
    TooManyStreams,
)
from microservice_connector.events.numbers import plain_number
from microservice_connector.web.guards import ASGIApp, Receive, Scope, Send
from microservice_connector.web.numbers import MAX_SQL_INT

UI_FILES = Path(str(files("microservice_connector.web") / "ui"))
STREAM_PATH = "/events/stream"
MAX_RECENT = 1000
# The page itself (and `/`, which sends there) needs no token: it asks for one when a read
# answers 401. Its config holds no secret, only where billing is.
UI_PUBLIC = ("/", "/ui")


class UiConfig(BaseModel):
    """What the page needs to know: where billing's API is (`MSC_BILLING_URL`)."""

    billing_url: str


def live_feed_router(feed: LiveFeed) -> APIRouter:
    """`GET /events/stream`: server-sent events, one per stored event, `id:` its position."""
    router = APIRouter(tags=["event browser"])

    # Left out of OpenAPI: a response that never ends would hang generated clients and fuzzers.
    @router.get(STREAM_PATH, response_class=StreamingResponse, include_in_schema=False)
    async def stream(
        after: Annotated[
            int | None, Query(ge=0, le=MAX_SQL_INT, description="start after this position")
        ] = None,
        recent: Annotated[
            int, Query(ge=0, le=MAX_RECENT, description="without `after`: events to replay")
        ] = 0,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        """Events as they are stored. A reconnecting browser resumes after `Last-Event-ID`;
        else after `after`, else with the `recent` latest events."""
        resume = after
        if last_event_id:
            resume = plain_number(last_event_id)
            if resume is None or resume < 0:
                raise HTTPException(422, "Last-Event-ID: must be an event position")
        start = await feed.start_after(resume, recent)
        try:
            subscription = feed.subscribe(start)
        except TooManyStreams as exc:
            raise HTTPException(503, str(exc)) from exc
        return _LiveStream(subscription)

    return router


class _LiveStream(StreamingResponse):
    """The SSE response of one subscription, which it gives back however the response ends
    (even if the client left before the first frame)."""

    def __init__(self, subscription: Subscription) -> None:
        super().__init__(
            subscription.feed.stream(subscription),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._subscription.close()


class CountRequests:
    """Counts every HTTP request but the live streams in `requests` until it is answered, so
    the live feed's fan-out gives way to it (pure ASGI: it reads and changes nothing)."""

    def __init__(self, app: ASGIApp, requests: RequestsInFlight) -> None:
        self._app = app
        self._requests = requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == STREAM_PATH:
            await self._app(scope, receive, send)
            return
        self._requests.started()
        try:
            await self._app(scope, receive, send)
        finally:
            self._requests.finished()


def mount_ui(app: FastAPI, config: UiConfig) -> None:
    """Serve the page at `/ui/` (and send `/` and `/ui` there)."""

    @app.get("/ui/config.json", response_model=UiConfig, include_in_schema=False)
    async def ui_config() -> UiConfig:
        return config

    @app.get("/ui", include_in_schema=False)
    @app.get("/", include_in_schema=False)
    async def to_ui() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=UI_FILES, html=True), name="ui")
