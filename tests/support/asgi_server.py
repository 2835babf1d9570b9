"""An ASGI app served by a real uvicorn on a free loopback port, in a thread of the test:
real sockets and HTTP, with the app still reachable from the test (to hold or inspect it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from support.processes import free_port, wait_for


@contextmanager
def served(app: Any) -> Iterator[int]:
    """Serve `app` (lifespan included) until the block ends; yields its port."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 30, f"uvicorn on {port}")
        assert server.started, f"uvicorn on {port} did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
