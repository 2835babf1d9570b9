"""Helpers shared by the bench scripts: a private nats-server, percentiles, stream counts.

`NatsServer` runs the project's `nats-server` binary (the one beside the venv's python, else
on PATH) with JetStream on a free loopback port and its own store folder, waits until it
accepts connections (with a deadline), and stops it (SIGTERM, then SIGKILL) at the end. It
never touches a server already running on the default port 4222.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from nats.js import JetStreamContext

from microservice_connector.runtime.system import free_port, nats_server_binary

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


class NatsServer:
    """`nats-server -js -sd <store>` on 127.0.0.1:<free port>, or `nats-server -c <config>`
    when given one (which then names the store, e.g. with `sync_interval: always`); a
    context manager."""

    def __init__(self, store_dir: Path, config: Path | None = None) -> None:
        self.store_dir = store_dir
        self.config = config
        self.port = 0
        self.log = store_dir / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections; a few ports are tried."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # another process may take the free port before the server binds
            self.port = free_port()
            args = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port)]
            if self.config is None:
                args += ["-js", "-sd", str(self.store_dir / "jetstream")]
            else:
                args += ["-c", str(self.config)]
            with self.log.open("ab") as out:
                self._process = subprocess.Popen(
                    args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break  # it exited: most likely the port was taken; try another
                if accepts(self.port):
                    return
                time.sleep(0.02)
            self.stop()
        tail = self.log.read_text(errors="replace").splitlines()[-10:]
        raise RuntimeError("nats-server did not start:\n" + "\n".join(tail))

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` right now."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    """How many messages `stream` holds now."""
    info = await js.stream_info(stream)
    return int(info.state.messages)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process `pid` has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """The machine's busy and total CPU time so far, from /proc/stat (all programs)."""
    fields = [float(value) for value in Path("/proc/stat").read_text().split()[1:9]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def busy_between(before: tuple[float, float], after: tuple[float, float]) -> float:
    """The fraction of the machine's CPU that was busy between two `machine_busy()`."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages, for the record of a run."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (`fraction` in 0..1)."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def rate_row(side: str, count: int, seconds: float) -> str:
    """One line of a throughput table."""
    return f"{side:<44} {count:>8} {seconds:>8.3f} {count / seconds:>11,.0f}"


def rate_header() -> str:
    """The header of a throughput table, matching `rate_row`."""
    return f"{'side':<44} {'messages':>8} {'seconds':>8} {'messages/s':>11}"
