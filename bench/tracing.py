"""What tracing costs: cart commands in-process with tracing off and on, same run (issue 14).

Off is the default (no `OTEL_*` variable): every tracing helper returns at once, and the
script also times those helpers alone, per command, against a command's own time. On records
the cart's spans (decide, append) with the SDK and exports them over OTLP/HTTP to a sink
process that answers 200 to everything, as a collector would. Both sides run `CartService` on
a `GroupCommitStore(SqlEventStore)` (SQLite, `--synchronous`) from `--callers` asyncio tasks,
each on a fresh database; the order alternates over `--rounds` rounds and the best of each
side is compared, so a noisy neighbour on the shared cores hurts both alike.

With `--latency S`, it then runs `bench/latency.py --seconds S` twice, as processes, without
and with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at the sink, and prints both reports: the
HTTP command span, the relay's and billing's spans are in the second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from microservice_connector import tracing
from microservice_connector.cart_service.application import CartService
from microservice_connector.eventstore import GroupCommitStore, SqlEventStore
from microservice_connector.runtime.system import free_port, wait_until
from microservice_connector.tracing import context

SINK = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *_):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
"""
HELPER_CALLS = 100_000


async def commands_per_second(folder: Path, sync: str, commands: int, callers: int) -> float:
    """Run `commands` add-item commands over `callers` tasks on a fresh database."""
    path = folder / f"{uuid.uuid4().hex}.db"
    store = GroupCommitStore(SqlEventStore(f"sqlite:///{path}", sqlite_synchronous=sync))  # type: ignore[arg-type]
    service = CartService(store)
    per_caller = commands // callers

    async def caller(index: int) -> None:
        for n in range(per_caller):
            await service.add_item(f"cart-{index}-{n % 16}", "item-001", 1)

    try:
        await asyncio.gather(*(caller(i) for i in range(callers)))  # warm-up: creates carts
        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(callers)))
        return per_caller * callers / (time.perf_counter() - started)
    finally:
        store.close()


def helper_ns() -> float:
    """Nanoseconds the off helpers cost per command (two spans, one trace read)."""
    started = time.perf_counter_ns()
    for _ in range(HELPER_CALLS):
        with tracing.span("cart.decide"):
            trace = tracing.current_trace()
        with tracing.span("cart.append"):
            trace.get("traceparent")
    return (time.perf_counter_ns() - started) / HELPER_CALLS


def traced_with(endpoint: str) -> Any:
    """Turn tracing on, exporting to `endpoint`; the provider, to shut down after the run."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    context.switch(provider.get_tracer("bench"))
    return provider


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000, help="timed commands per run")
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs, alternating")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--latency", type=float, default=0.0, help="also run latency.py")
    args = parser.parse_args()
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)])
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _accepts(port), 10, "the OTLP sink")
        off_ns = helper_ns()
        best = {"off": 0.0, "on": 0.0}
        with tempfile.TemporaryDirectory() as folder:
            for round_ in range(args.rounds):
                for side in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                    provider = traced_with(endpoint) if side == "on" else None
                    rate = asyncio.run(
                        commands_per_second(
                            Path(folder), args.synchronous, args.commands, args.callers
                        )
                    )
                    if provider is not None:  # its spans exported, its thread gone
                        provider.shutdown()
                        context.switch(None)
                    best[side] = max(best[side], rate)
                    print(f"round {round_ + 1} tracing {side}: {rate:,.0f} commands/s")
        context.switch(None)
        per_command_ns = 1e9 / best["off"]
        print(
            f"\nbest, tracing off: {best['off']:,.0f} commands/s ({per_command_ns / 1000:.1f} µs)"
        )
        print(f"best, tracing on:  {best['on']:,.0f} commands/s")
        print(f"on / off: {best['on'] / best['off']:.2f}")
        print(
            f"tracing helpers while off: {off_ns:.0f} ns per command, "
            f"{off_ns / per_command_ns:.2%} of a command"
        )
        if args.latency:
            script = Path(__file__).with_name("latency.py")
            for label, extra in (("off", {}), ("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})):
                print(f"\n--- latency.py, tracing {label} ---", flush=True)
                subprocess.run(
                    [sys.executable, str(script), "--seconds", str(args.latency)],
                    env={**os.environ, **extra},
                    check=False,
                )
    finally:
        sink.terminate()
        sink.wait()
    return 0


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    sys.exit(main())
