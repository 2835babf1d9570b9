"""CPU of one HTTP command inside the cart service, with the command door and without it.

Two cart apps are built as `msc cart-service` builds its app (`build_cart_app`, no relay),
each on its own SQLite file in a temporary folder (`synchronous=NORMAL`, so that the disk
does not dominate what is measured). One keeps the command door
(`cart_service/infrastructure/command_door.py`); the other has its middleware stack built
again by FastAPI, so every command passes the whole stack, as before the door. Each takes
`--commands` `POST /carts/{id}/items` calls over 500 carts, made one at a time straight into
the ASGI app (no socket, no HTTP parsing: what uvicorn adds is the same for both), in
`--rounds` alternating rounds after a warm-up, with what is alive at the start out of the
garbage collector's reach, as in a served process. Prints the process CPU time and wall time per
command of each round, the median of each side and their ratio (door over whole stack: below
1 means the door saves CPU). Exits non-zero if any command is not answered 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from _support import load_average
from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings
from microservice_connector.web.server import settle_garbage_collector

BODY = json.dumps({"item_id": "item-001", "quantity": 1}).encode()
CARTS = 500


async def command(app: FastAPI, number: int) -> int:
    """One add-item command through `app`; its status."""
    path = f"/carts/cpu-{number % CARTS}/items"
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"cart"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def round_of(app: FastAPI, start: int, count: int) -> tuple[float, float]:
    """CPU and wall seconds per command over `count` commands."""
    wall, cpu = time.perf_counter(), time.process_time()
    for number in range(start, start + count):
        if (status := await command(app, number)) != 200:
            raise SystemExit(f"a command was answered {status}")
    return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-command-cpu-"))
    door = build_cart_app(
        Settings(data_dir=folder / "door", sqlite_synchronous="NORMAL"), relay=False
    )
    whole = build_cart_app(
        Settings(data_dir=folder / "whole", sqlite_synchronous="NORMAL"), relay=False
    )
    whole.middleware_stack = None  # FastAPI builds its whole stack on the first call
    settle_garbage_collector()  # as a served process does: no full collection in the rounds
    figures: dict[str, list[float]] = {"door": [], "whole stack": []}
    async with door.router.lifespan_context(door), whole.router.lifespan_context(whole):
        for app in (door, whole):
            await round_of(app, 0, 500)  # warm-up: every cart made, caches filled
        for number in range(args.rounds):
            for name, app in (("door", door), ("whole stack", whole)):
                cpu, wall = await round_of(app, 500 + number * args.commands, args.commands)
                figures[name].append(cpu)
                print(
                    f"round {number + 1} {name:<11} {cpu * 1e6:6.0f} µs CPU,"
                    f" {wall * 1e6:6.0f} µs wall a command"
                )
    door_cpu, whole_cpu = (statistics.median(figures[name]) for name in ("door", "whole stack"))
    print(
        f"median CPU a command: door {door_cpu * 1e6:.0f} µs, whole stack {whole_cpu * 1e6:.0f} µs;"
        f" ratio {door_cpu / whole_cpu:.2f}"
    )
    print(load_average())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=3000, help="commands a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds a side, alternating")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
