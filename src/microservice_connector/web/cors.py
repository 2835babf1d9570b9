"""Cross-origin reads for the event browser: the page the cart service serves may call the
billing API, and no other origin may."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

_LOOPBACK_TWINS = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}


def ui_origins(cart_url: str) -> list[str]:
    """The origin of `cart_url` (`MSC_CART_URL`, where the browser loads the UI), and its
    loopback twin (`localhost` for `127.0.0.1` and back) since people type either."""
    parts = urlsplit(cart_url.strip())
    if not parts.scheme or not parts.hostname:
        return []
    port = f":{parts.port}" if parts.port else ""
    hosts = [parts.hostname]
    if parts.hostname in _LOOPBACK_TWINS:
        hosts.append(_LOOPBACK_TWINS[parts.hostname])
    return [f"{parts.scheme}://{host}{port}" for host in hosts]


class _JsonRefusals(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflight answers in JSON with `detail`,
    as every other error of the API does, instead of plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        """Starlette's answer, with a refusal's text moved into JSON."""
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        reason = bytes(answer.body).decode()  # "Disallowed CORS origin, method"
        kept = {
            name: value
            for name, value in answer.headers.items()
            if name not in ("content-type", "content-length")
        }
        detail = f"cross-origin request refused: {reason.removeprefix('Disallowed CORS ')}"
        return JSONResponse({"detail": detail}, status_code=answer.status_code, headers=kept)


def allow_ui(app: Any, cart_url: str) -> None:
    """Let the UI's origin GET and POST (with a bearer token) across origins; install it
    last, so even a 401 from the token guard carries the CORS headers the browser needs."""
    app.add_middleware(
        _JsonRefusals,
        allow_origins=ui_origins(cart_url),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
