"""The connection a PostgreSQL writer keeps between append batches."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Connection, Engine

# A connection used this recently is taken as alive unless the server has spoken on it since
# (see `_quiet`); one idle for longer goes back to the pool, whose checkout pings it (a round
# trip) before the next batch may use it.
FRESH_FOR_S = 1.0


class HeldConnection:
    """One connection of `writer` kept checked out between the batches of a busy writer, so
    that a batch neither waits for the pool nor pays its ping; a batch that fails, or that
    finds it taken or stale, uses a connection of the pool as before. Thread-safe."""

    def __init__(self, writer: Engine) -> None:
        self._writer = writer
        self._lock = threading.Lock()
        self._held: tuple[float, Connection] | None = None
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The held connection if it is free and fresh, else one checked out of the pool;
        kept after a clean block, given back to the pool after a failed one."""
        with self._lock:
            held, self._held = self._held, None
        if held is not None and (time.monotonic() - held[0] > FRESH_FOR_S or not _quiet(held[1])):
            held[1].close()
            held = None
        connection = held[1] if held is not None else self._writer.connect()
        try:
            yield connection
        except BaseException:
            connection.close()
            raise
        with self._lock:
            if self._held is None and not self._closed:
                self._held = (time.monotonic(), connection)
                return
        connection.close()

    def close(self) -> None:
        """Give the held connection back to the pool; later blocks check out their own."""
        with self._lock:
            held, self._held, self._closed = self._held, None, True
        if held is not None:
            held[1].close()


def _quiet(connection: Connection) -> bool:
    """Whether the server has sent nothing on this idle connection: a server that ends a
    session (shutdown, `pg_terminate_backend`) says so, or closes it, before the next batch
    would find out. Costs no round trip."""
    socket = cast(Any, connection.connection.driver_connection).fileno()
    readable, _, _ = select.select([socket], [], [], 0)
    return not readable
