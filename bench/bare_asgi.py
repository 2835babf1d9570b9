"""The reference for `http_throughput.py`: a bare ASGI app answering every request with the
cart JSON a command returns, and nothing else. Served by `web.server.serve` (uvicorn with
httptools and uvloop, the cart service's own stack): `python bench/bare_asgi.py PORT`."""

from __future__ import annotations

import sys
from typing import Any

from microservice_connector.settings import Settings
from microservice_connector.web.server import serve

BODY = b'{"cart_id":"wrk-1","version":1,"status":"open","items":{"item-001":1}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the request body, answer the cart."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body", False):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    serve(app, Settings(), name="bare ASGI app", host="127.0.0.1", port=int(sys.argv[1]))
