"""Threads released together, for tests of races between writers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def race(count: int, attempt: Callable[[int], T]) -> list[T | BaseException]:
    """Run `attempt(0..count-1)` on `count` threads released together; their outcomes."""
    start = threading.Barrier(count, timeout=30)

    def contender(index: int) -> T:
        start.wait()
        return attempt(index)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(contender, index) for index in range(count)]
        return [outcome(future) for future in futures]


def outcome(future: Future[T]) -> T | BaseException:
    """What `future` came to: its result, or the exception it raised (waiting up to 60 s)."""
    exc = future.exception(timeout=60)
    return exc if exc is not None else future.result()
