"""A real Tansu (Kafka-compatible) broker for tests: free loopback port, restartable.

Tansu runs on its in-memory engine, so `stop()` then `start()` gives an empty broker on the
same port: topics, records and group offsets are gone. To take the broker away and bring it
back *with* its data, put a `TcpProxy` in front (`TansuServer(behind_proxy=True)`): clients
then reach Tansu only through the proxy, which `cut()` and `restore()` disconnect and
reconnect while Tansu itself runs on.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pytest

from microservice_connector.runtime.tansu import TansuUnavailable, tansu_command
from support.nats import accepts_connections, free_port
from support.processes import end_process, log_tail
from support.tcp_proxy import TcpProxy

START_TIMEOUT_S = 15.0


def tansu_or_skip() -> None:
    """Skip the calling test, saying why, where there is no Tansu build for this platform."""
    try:
        tansu_command(0)
    except TansuUnavailable as exc:
        pytest.skip(str(exc))


class TansuServer:
    """One `tansu broker` process on 127.0.0.1, optionally behind a `TcpProxy`."""

    def __init__(self, log_dir: Path | None = None, *, behind_proxy: bool = False) -> None:
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="msc-tansu-"))
        self.port = free_port()
        self.proxy = TcpProxy(self.port) if behind_proxy else None
        self.log = self.log_dir / "tansu.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """Where clients connect: `127.0.0.1:<port>` (the proxy's, if there is one)."""
        port = self.proxy.port if self.proxy is not None else self.port
        return f"127.0.0.1:{port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> TansuServer:
        """Start (or restart, empty) the broker and return once it accepts connections."""
        if self.running:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        advertised = self.proxy.port if self.proxy is not None else None
        command = tansu_command(self.port, advertised_port=advertised)
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts_connections(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"tansu exited: {self._tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"tansu not accepting on {self.port}: {self._tail()}")
            time.sleep(0.01)
        if self.proxy is not None:
            self.proxy.restore()
        return self

    def stop(self) -> None:
        """SIGTERM and wait: everything the broker held is gone."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._end(signal.SIGKILL)

    def close(self) -> None:
        """Stop the broker and the proxy."""
        if self.proxy is not None:
            self.proxy.close()
        self.stop()

    def __enter__(self) -> TansuServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _end(self, sig: signal.Signals) -> None:
        process, self._process = self._process, None
        end_process(process, sig)

    def _tail(self) -> str:
        return log_tail(self.log)
