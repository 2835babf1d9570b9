"""The default identity of a running process, for logs, metrics and outbox leases."""

from __future__ import annotations

import os
import socket


def default_instance_id() -> str:
    """`<hostname>-<pid>`: unique among the processes running at one time."""
    return f"{socket.gethostname()}-{os.getpid()}"
