"""An outbox relay running for the length of a block, and polling for what it does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from microservice_connector.eventstore.relay import OutboxRelay


async def until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[None]:
    """`relay` running while the block runs; then stopped, within 10 s whatever a held mark
    does to its flush."""
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
