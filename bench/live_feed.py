"""Command latency with idle live-feed streams open against the cart service, and without.

The whole system runs as `msc up` runs it (`runtime.system.System`: embedded nats-server,
cart service with its relay, billing; SQLite FULL; free ports; a temporary data folder).
In one run, `--commands` add-item commands are sent one after another (each waits for the
previous answer) over `--carts` carts, first with no stream open, then with `--streams`
`GET /events/stream` connections held open (each reads and discards what it is sent, as a
browser tab would), and the HTTP response times of the two sets are compared. Target: p99
with the streams open at most 2x p99 without (issue 15; 4.8 -> 117 ms measured before).
The streams are opened, and each has received its first frame, before the second set starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from _support import cpu_seconds, load_average, percentile
from latency import RawClient
from microservice_connector.runtime.system import System, free_port

TARGET_RATIO = 2.0
OPEN_TIMEOUT_S = 60.0


class IdleStream:
    """One `GET /events/stream` connection that reads and drops whatever it is sent."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.received = 0
        self._task: asyncio.Task[None] | None = None

    def open(self, port: int) -> None:
        """Connect and start reading, in the background."""
        self._task = asyncio.create_task(self._read(port))

    async def _read(self, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /events/stream HTTP/1.1\r\nHost: cart\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise RuntimeError(f"stream refused: {head.decode('latin-1')}")
            self.started.set()
            while chunk := await reader.read(65536):
                self.received += len(chunk)
        finally:
            writer.close()

    async def close(self) -> None:
        """Disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def timed_commands(
    client: RawClient, carts: list[str], count: int, cpu: list[float] | None = None, pid: int = 0
) -> list[float]:
    """`count` add-item commands one after another: their response times in ms, sorted;
    appends the CPU seconds process `pid` used meanwhile to `cpu` when given."""
    times = []
    used = cpu_seconds(pid) if cpu is not None else 0.0
    for k in range(count):
        started = time.perf_counter()
        status, body = await client.post(
            f"/carts/{carts[k % len(carts)]}/items", b'{"item_id": "item-001", "quantity": 1}'
        )
        times.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise RuntimeError(f"command answered {status}: {body!r}")
    if cpu is not None:
        cpu.append(cpu_seconds(pid) - used)
    return sorted(times)


def summary(label: str, times: list[float]) -> str:
    """One row: p50, p90, p99 and max in ms."""
    cells = " ".join(f"{percentile(times, q):>8.2f}" for q in (0.5, 0.9, 0.99))
    return f"{label:<28} {len(times):>6} {cells} {times[-1]:>8.2f}"


async def run(args: argparse.Namespace, folder: Path) -> int:
    os.environ["MSC_LIVE_FEED_MAX_STREAMS"] = str(max(args.streams, 1))
    carts = [f"feed-{n}" for n in range(args.carts)]
    with System(folder, cart_port=free_port(), billing_port=free_port()) as system:
        client = RawClient("127.0.0.1", system.cart_port)
        await client.open(1)
        streams = [IdleStream() for _ in range(args.streams)]
        pid = next(p.process.pid for p in system.parts if p.name == "cart-service")
        cpu: list[float] = []
        try:
            await timed_commands(client, carts, args.carts)  # warm-up: creates every cart
            without = await timed_commands(client, carts, args.commands, cpu, pid)
            for stream in streams:
                stream.open(system.cart_port)
            await asyncio.wait_for(
                asyncio.gather(*(s.started.wait() for s in streams)), OPEN_TIMEOUT_S
            )
            profiler = None
            if args.profile is not None:
                profiler = await asyncio.create_subprocess_exec(
                    *(str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid)),
                    *("-o", str(args.profile), "--rate", "250", "--nonblocking"),
                    *(() if args.profile.suffix == ".svg" else ("--format", "raw")),
                    stdout=asyncio.subprocess.DEVNULL,
                )
            with_streams = await timed_commands(client, carts, args.commands, cpu, pid)
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its file and exits
                await profiler.wait()
        finally:
            for stream in streams:
                await stream.close()
            await client.close()
    received = sum(s.received for s in streams)
    print(load_average())
    print(
        f"{args.commands} commands one after another over {args.carts} carts, whole system "
        f"(msc up, SQLite FULL); then again with {args.streams} live-feed streams open, which "
        f"received {received:,} bytes between them"
    )
    print(
        f"{'HTTP response, ms':<28} {'n':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        "  cart CPU/command"
    )
    print(summary("no stream open", without), f"{cpu[0] / args.commands * 1e6:>9.0f} µs")
    print(
        summary(f"{args.streams} streams open", with_streams),
        f"{cpu[1] / args.commands * 1e6:>9.0f} µs",
    )
    ratio = percentile(with_streams, 0.99) / percentile(without, 0.99)
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"p99 ratio with/without: {ratio:.2f} (target <= {TARGET_RATIO:g}: {verdict})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=500, help="commands in each set")
    parser.add_argument("--streams", type=int, default=1_000, help="live-feed streams to open")
    parser.add_argument("--carts", type=int, default=50, help="carts, round-robin")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the cart service during the second set (.svg or raw)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-live-feed-") as folder:
        return asyncio.run(run(args, Path(folder)))


if __name__ == "__main__":
    sys.exit(main())
