"""HTTP commands through the whole system, against a bare ASGI app on the same server stack.

Both sides get the same wrk load in one run (`wrk -t1 -c32` by default; Debian package `wrk`,
installed by `make tools`): `POST /carts/wrk-N/items` with `{"item_id": "item-001",
"quantity": 1}`, N going round 1,000 carts (a wrk Lua script).

* reference: `bench/bare_asgi.py`, an ASGI app that reads the body and answers the cart JSON,
  served by `web.server.serve` (uvicorn, httptools, uvloop: the cart service's own stack);
* the system: `runtime.system.System`, what `msc up` runs, as processes on free ports over a
  temporary data folder: embedded nats-server, the cart service with its relay (SQLite,
  `synchronous=FULL` unless MSC_SQLITE_SYNCHRONOUS says otherwise) and billing.

Each side has `--warmup` s of unmeasured load first (it creates the carts), then `--seconds`
measured. The script prints both rates and their ratio (target: the cart service reaches
>= 12% of the bare rate), the cart service's CPU per command, billing's applied rate over the
same window (from `billing.db`: the sum of `bills.last_version`), and billing's lag when the
load stops, in seconds of commands (target < 1 s); then it waits for billing to drain and
checks that it applied every command. `--profile FILE.svg` records the cart service with
py-spy during the measured window. It exits non-zero on any failed request or lost command.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _support import accepts, cpu_seconds, load_average
from microservice_connector.runtime.system import System, free_port

TARGET_RATIO = 0.12
TARGET_LAG_S = 1.0
DRAIN_TIMEOUT_S = 60.0
START_TIMEOUT_S = 15.0
BARE_APP = Path(__file__).with_name("bare_asgi.py")
PY_SPY = str(Path(sys.executable).with_name("py-spy"))  # the dev dependency, in the venv
LUA = """
local counter = 0
request = function()
  counter = counter + 1
  local path = "/carts/wrk-" .. (counter % {carts}) .. "/items"
  return wrk.format("POST", path, {{["Content-Type"] = "application/json"}},
                    '{{"item_id": "item-001", "quantity": 1}}')
end
"""


@dataclass(frozen=True)
class WrkRun:
    """What wrk reported for one run."""

    requests: int
    seconds: float
    rate: float
    failed: int  # non-2xx answers plus socket errors

    @classmethod
    def parse(cls, output: str) -> WrkRun:
        """Read wrk's summary."""
        done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", output)
        rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
        if done is None or rate is None:
            raise RuntimeError(f"wrk said:\n{output}")
        seconds = float(done[2]) / (1000 if done[3] == "ms" else 1)
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        errors = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
        )
        failed = (int(bad[1]) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
        return cls(int(done[1]), seconds, float(rate[1]), failed)


def wrk(url: str, seconds: float, args: argparse.Namespace, script: Path) -> WrkRun:
    """Run wrk against `url` for `seconds`."""
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s"]
    command += ["-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return WrkRun.parse(done.stdout)


def applied_versions(billing_db: Path) -> int:
    """Billing's applied events: the sum over carts of the last version applied."""
    connection = sqlite3.connect(f"file:{billing_db}?mode=ro", uri=True)
    with contextlib.closing(connection), contextlib.suppress(sqlite3.OperationalError):
        return int(
            connection.execute("SELECT coalesce(sum(last_version), 0) FROM bills").fetchone()[0]
        )
    return 0  # no table yet: billing has not started


def committed_events(events_db: Path) -> int:
    """Events the cart service has committed."""
    with contextlib.closing(sqlite3.connect(f"file:{events_db}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])


def run_bare(args: argparse.Namespace, folder: Path, script: Path) -> WrkRun:
    """wrk against the bare ASGI app, on a free port."""
    port = free_port()
    log = (folder / "bare-asgi.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, str(BARE_APP), str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not accepts(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bare ASGI app did not start; see {log.name}")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        wrk(url, args.warmup, args, script)
        return wrk(url, args.seconds, args, script)
    finally:
        server.terminate()
        server.wait()
        log.close()


@dataclass(frozen=True)
class SystemRun:
    """The system's side: wrk's view, the cart service's CPU and billing's progress."""

    load: WrkRun
    cart_cpu_s: float
    committed: int  # events committed in the measured window
    applied: int  # events billing applied in the same window
    lag: int  # events committed but not yet applied when the load stopped
    drained: bool  # billing applied every committed event within DRAIN_TIMEOUT_S


def run_system(args: argparse.Namespace, folder: Path, script: Path) -> SystemRun:
    """wrk against the cart service of a whole system (`msc up`), billing watched."""
    system = System(folder / "system", cart_port=free_port(), billing_port=free_port())
    events_db, billing_db = system.data_dir / "events.db", system.data_dir / "billing.db"
    with system:
        url = f"http://127.0.0.1:{system.cart_port}"
        cart_pid = next(p.process.pid for p in system.parts if p.name == "cart-service")
        wrk(url, args.warmup, args, script)
        committed, applied, cpu = committed_events(events_db), applied_versions(billing_db), 0.0
        profiler = None
        if args.profile is not None:
            profiler = subprocess.Popen(
                [
                    *(PY_SPY, "record", "-o", str(args.profile), "--pid", str(cart_pid)),
                    *("--duration", f"{args.seconds:.0f}", "--rate", "250", "--nonblocking"),
                    *(() if args.profile.suffix == ".svg" else ("--format", "raw")),
                ],
                stdout=subprocess.DEVNULL,
            )
        cpu = cpu_seconds(cart_pid)
        load = wrk(url, args.seconds, args, script)
        cpu = cpu_seconds(cart_pid) - cpu
        committed_after, applied_after = committed_events(events_db), applied_versions(billing_db)
        # Commands wrk left in flight still commit after it stopped: compare with the latest.
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not (drained := applied_versions(billing_db) >= committed_events(events_db)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if profiler is not None:
            profiler.wait()
        failed = system.failed_part()
        if failed is not None:
            raise RuntimeError(f"{failed.name} exited:\n{failed.tail()}")
    return SystemRun(
        load,
        cpu,
        committed_after - committed,
        applied_after - applied,
        committed_after - applied_after,
        drained,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a side")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--carts", type=int, default=1_000, help="carts, round-robin")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy flame graph of the cart service (.svg; else collapsed stacks)",
    )
    parser.add_argument("--keep", type=Path, help="use (and keep) this folder, for the logs")
    args = parser.parse_args()
    print(load_average(), "(before)")
    with tempfile.TemporaryDirectory(prefix="bench-http-") as name:
        folder = Path(name) if args.keep is None else args.keep
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "commands.lua"
        script.write_text(LUA.format(carts=args.carts))
        bare = run_bare(args, folder, script)
        ours = run_system(args, folder, script)
    load = ours.load
    print(load_average(), "(after)")
    print(f"wrk -t{args.threads} -c{args.connections}, {args.seconds:g} s measured a side")
    print(f"{'side':<36} {'requests':>9} {'failed':>7} {'req/s':>9}")
    for side, run in (("bare ASGI app (same server stack)", bare), ("cart service (msc up)", load)):
        print(f"{side:<36} {run.requests:>9} {run.failed:>7} {run.rate:>9,.0f}")
    ratio = load.rate / bare.rate
    verdict = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(f"ratio cart/bare: {ratio:.3f} (target >= {TARGET_RATIO:g}: {verdict})")
    per_command = ours.cart_cpu_s / max(1, load.requests) * 1e6
    print(
        f"cart service CPU: {ours.cart_cpu_s / load.seconds:.2f} cores, "
        f"{per_command:.0f} µs per command"
    )
    window = load.seconds
    lag_s = ours.lag / load.rate if load.rate else float("inf")
    print(
        f"billing applied {ours.applied} events in the window = {ours.applied / window:,.0f}/s "
        f"(cart committed {ours.committed} = {ours.committed / window:,.0f}/s); lag when the "
        f"load stopped: {ours.lag} events = {lag_s:.2f} s of commands "
        f"(target < {TARGET_LAG_S:g} s: {'met' if lag_s < TARGET_LAG_S else 'MISSED'})"
    )
    problems = []
    if bare.failed or load.failed:
        problems.append(f"failed requests: bare {bare.failed}, cart {load.failed}")
    if not ours.drained:
        problems.append(f"billing did not apply every event within {DRAIN_TIMEOUT_S:g} s")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
