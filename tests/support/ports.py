"""Loopback ports for the servers tests start, chosen so that nothing else takes them first.

A port the kernel picks for a bind to port 0 lies in its range for outgoing connections'
local ports (`net.ipv4.ip_local_port_range`, 32768-60999 by default): between the moment a
test chooses it and the moment its server binds it, any client connection of the suite may
take it ("address already in use"). So ports are handed out from below that range, each
pytest-xdist worker from its own slice, walking on so that a worker does not hand out a port
again soon (a killed server keeps its port for its restart)."""

from __future__ import annotations

import itertools
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

LOWEST = 20000
WORKER_ENV_VAR = "PYTEST_XDIST_WORKER"  # set by pytest-xdist in its workers: gw0, gw1, ...
_LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _first_local_port() -> int:
    """Where the kernel's local ports for outgoing connections begin (32768 if unknown)."""
    try:
        return int(_LOCAL_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_ports() -> Iterator[int]:
    """This process's slice of the ports below the kernel's range, endlessly, from a random
    place in it (runs that follow each other do not start on the same ports)."""
    end = _first_local_port()
    if end - LOWEST < 1000:  # the kernel's range reaches down to here: take its picks
        return _kernel_ports()
    workers = max(1, _number(os.environ.get(f"{WORKER_ENV_VAR}_COUNT", "1"), 1))
    worker = _number(os.environ.get(WORKER_ENV_VAR, "gw0").removeprefix("gw"), 0)
    size = (end - LOWEST) // workers
    first = LOWEST + (worker % workers) * size
    start = random.randrange(size)
    return (first + (start + step) % size for step in itertools.count())


def _number(text: str, default: int) -> int:
    """`text` as a whole number, else `default` (a worker named otherwise than gwN shares
    gw0's slice, kept apart from it only by its random start)."""
    return int(text) if text.isdigit() else default


def _kernel_ports() -> Iterator[int]:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            yield sock.getsockname()[1]


_ports = _worker_ports()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that no client
    connection and no other xdist worker of this suite will take."""
    for port in _ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use by something outside the suite
            return port
    raise AssertionError("unreachable: the ports go on endlessly")
