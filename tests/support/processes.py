"""Real service processes for tests: start on a free loopback port, wait until up, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from support.ports import free_port

MSC = str(Path(sys.executable).with_name("msc"))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def run_msc(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `msc ARGS` to completion, capturing its output."""
    return subprocess.run(
        [MSC, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def msc_service(
    args: Sequence[str], *, health_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `msc ARGS` until the block ends; yield once `health_url` answers 200."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [MSC, *args], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"msc {' '.join(args)} exited: {log.read_text()[-2000:]}")
            return _answers(health_url)

        wait_for(up, 30, f"msc {' '.join(args)} at {health_url}")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def cart_service(
    data_dir: Path, *, database_url: str | None = None, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A real `msc cart-service` on a free port (with `env` added); yields its base URL."""
    port = free_port()
    args = ["cart-service", "--port", str(port), "--data-dir", str(data_dir), "--no-relay"]
    if database_url is not None:
        args += ["--database-url", database_url]
    base = f"http://127.0.0.1:{port}"
    log = data_dir / f"cart-{port}.log"
    with msc_service(args, health_url=f"{base}/healthz", log=log, env=env):
        yield base


def end_process(
    process: subprocess.Popen[bytes] | None, sig: signal.Signals, grace: float = 10.0
) -> None:
    """Send `sig` to a still-running `process` and reap it (SIGKILL if it lingers)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_tail(log: Path, chars: int = 2000) -> str:
    """The end of a process's log, for failure messages."""
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
