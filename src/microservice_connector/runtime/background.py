"""Background loops beside an HTTP server: started together, stopped gracefully together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
CANCEL_GRACE_S = 2.0
Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class Background:
    """Runs loops that each take a stop event; `stop()` sets it and lets them finish."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, loop: Loop) -> None:
        """Run `loop(stopping)` as a task; a crash is logged, never silent."""
        task = asyncio.create_task(loop(self.stopping), name=name)
        task.add_done_callback(_report)
        self._tasks.append(task)

    async def stop(self, grace: float = 10.0) -> None:
        """Ask every loop to finish its current round; cancel what has not after `grace` s."""
        self.stopping.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace)
        for task in pending:
            log.warning("%s did not stop within %.0f s; cancelling", task.get_name(), grace)
            task.cancel()
        if pending:
            await asyncio.wait(pending)


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())


async def until_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T | None:
    """The result of `work`, or None if `stop` is set first: `work` is then cancelled, and
    given up to `CANCEL_GRACE_S` to clean up (close what it opened) before this returns."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.debug("stopped while it failed: %r", task.exception())
    return None
