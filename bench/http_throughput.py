"""HTTP commands through the whole system, against a bare ASGI app on the same server stack.

Both sides get the same wrk load in one run (`wrk -t1 -c32` by default; Debian package `wrk`,
installed by `make tools`): `POST /carts/wrk-N/items` with `{"item_id": "item-001",
"quantity": 1}`, N going round 1,000 carts (a wrk Lua script).

* reference: `bench/bare_asgi.py`, an ASGI app that reads the body and answers the cart JSON,
  served by `web.server.serve` (uvicorn, httptools, uvloop: the cart service's own stack);
* the system: `runtime.system.System`, what `msc up` runs, as processes on free ports over a
  temporary data folder: embedded nats-server, the cart service with its relay (SQLite,
  `synchronous=FULL` unless MSC_SQLITE_SYNCHRONOUS says otherwise) and billing.

Both sides run at once. Each gets `--warmup` s of unmeasured load first (the system's creates
the carts); then `--rounds` rounds (3) each measure `--seconds` (10) on the bare app and then
on the system, so that the machine's swings in speed (2x within minutes on this project's
machine) fall inside a round rather than between the two sides. For every round the script
prints both rates and their ratio, the cart service's CPU per command, billing's applied rate
over the same window (from `billing.db`: the sum of `bills.last_version`) and billing's lag
when the load stopped, in seconds of commands. The verdict is on the median round's ratio
(target: the cart service reaches >= 12% of the bare rate) and on the largest lag (target
< 1 s); then it waits for billing to drain and checks that it applied every command.
Before each bare window it waits for billing to catch up. `--profile FILE.svg` records the
cart service with py-spy in one more window after the rounds, which is not judged. It exits
non-zero on any failed request or lost command.
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
from collections.abc import Iterator
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


@contextlib.contextmanager
def bare_app(folder: Path) -> Iterator[str]:
    """The bare ASGI app on a free port, its URL while the block runs."""
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
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()
        log.close()


@dataclass(frozen=True)
class SystemRun:
    """The system's side of one round: wrk's view, the cart service's CPU and billing's
    progress over the same window."""

    load: WrkRun
    cart_cpu_s: float
    committed: int  # events committed in the measured window
    applied: int  # events billing applied in the same window
    lag: int  # events committed but not yet applied when the load stopped


@dataclass
class Watched:
    """The running system's cart service and databases, for measuring rounds."""

    url: str
    cart_pid: int
    events_db: Path
    billing_db: Path

    def measure(self, args: argparse.Namespace, script: Path, profile: Path | None) -> SystemRun:
        """One measured wrk window against the cart service, billing watched."""
        committed, applied = committed_events(self.events_db), applied_versions(self.billing_db)
        profiler = None if profile is None else start_profiler(profile, self.cart_pid, args)
        cpu = cpu_seconds(self.cart_pid)
        load = wrk(self.url, args.seconds, args, script)
        cpu = cpu_seconds(self.cart_pid) - cpu
        # Billing first: what commits between the two reads counts as lag, never below 0.
        applied_after = applied_versions(self.billing_db)
        committed_after = committed_events(self.events_db)
        if profiler is not None:
            profiler.wait()
        return SystemRun(
            load,
            cpu,
            committed_after - committed,
            applied_after - applied,
            committed_after - applied_after,
        )

    def drained(self) -> bool:
        """Whether billing applies every committed event within `DRAIN_TIMEOUT_S`; commands
        wrk left in flight still commit after it stopped, so compare with the latest."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while applied_versions(self.billing_db) < committed_events(self.events_db):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


def start_profiler(profile: Path, pid: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for one measured window into `profile`."""
    return subprocess.Popen(
        [
            *(PY_SPY, "record", "-o", str(profile), "--pid", str(pid)),
            *("--duration", f"{args.seconds:.0f}", "--rate", "250", "--nonblocking"),
            *(() if profile.suffix == ".svg" else ("--format", "raw")),
        ],
        stdout=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Round:
    """One round: the bare app's window, then the system's."""

    bare: WrkRun
    ours: SystemRun

    @property
    def ratio(self) -> float:
        """The cart service's rate over the bare app's, in this round."""
        return self.ours.load.rate / self.bare.rate if self.bare.rate else 0.0

    @property
    def lag_s(self) -> float:
        """Billing's lag when the cart's window ended, in seconds of its commands."""
        ours = self.ours
        return ours.lag / ours.load.rate if ours.load.rate else float("inf")


def run_rounds(args: argparse.Namespace, folder: Path, script: Path) -> tuple[list[Round], bool]:
    """Both sides up at once, warmed, then measured in turn `--rounds` times: a change in
    the machine's speed during the run (this project's machine swings by 2x within minutes)
    falls on both sides of a round instead of on one side of the run. Each bare window waits
    for billing to catch up first, so the system's work left over does not slow it. With
    `--profile`, one more cart window, not judged, is recorded with py-spy. Returns the
    rounds and whether billing drained each time."""
    system = System(folder / "system", cart_port=free_port(), billing_port=free_port())
    with bare_app(folder) as bare_url, system:
        cart_pid = next(p.process.pid for p in system.parts if p.name == "cart-service")
        watched = Watched(
            f"http://127.0.0.1:{system.cart_port}",
            cart_pid,
            system.data_dir / "events.db",
            system.data_dir / "billing.db",
        )
        wrk(bare_url, args.warmup, args, script)
        wrk(watched.url, args.warmup, args, script)  # creates the carts
        rounds, drained = [], True
        for index in range(args.rounds):
            drained = watched.drained() and drained
            bare = wrk(bare_url, args.seconds, args, script)
            rounds.append(Round(bare, watched.measure(args, script, None)))
            print(f"round {index + 1}: {round_line(rounds[-1])}", flush=True)
        if args.profile is not None:
            profiled = watched.measure(args, script, args.profile)
            print(f"profiled window (not judged): {profiled.load.rate:,.0f}/s", flush=True)
        drained = watched.drained() and drained
        failed = system.failed_part()
        if failed is not None:
            raise RuntimeError(f"{failed.name} exited:\n{failed.tail()}")
    return rounds, drained


def round_line(done: Round) -> str:
    """A round's two rates, their ratio, the cart's CPU a command and billing's lag."""
    ours = done.ours
    per_command = ours.cart_cpu_s / max(1, ours.load.requests) * 1e6
    window = ours.load.seconds
    return (
        f"bare {done.bare.rate:,.0f}/s, cart {ours.load.rate:,.0f}/s = {done.ratio:.3f}; "
        f"cart CPU {ours.cart_cpu_s / window:.2f} cores, {per_command:.0f} µs a command; "
        f"committed {ours.committed / window:,.0f}/s, billing applied "
        f"{ours.applied / window:,.0f}/s, lag {ours.lag} events = {done.lag_s:.2f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds a window")
    parser.add_argument("--rounds", type=int, default=3, help="bare-then-cart windows")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t")
    parser.add_argument("--carts", type=int, default=1_000, help="carts, round-robin")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy flame graph of the cart service in one more window after the rounds, "
        "not judged (.svg; else collapsed stacks)",
    )
    parser.add_argument("--keep", type=Path, help="use (and keep) this folder, for the logs")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(load_average(), "(before)")
    print(f"wrk -t{args.threads} -c{args.connections}, {args.seconds:g} s a window")
    with tempfile.TemporaryDirectory(prefix="bench-http-") as name:
        folder = Path(name) if args.keep is None else args.keep
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / "commands.lua"
        script.write_text(LUA.format(carts=args.carts))
        rounds, drained = run_rounds(args, folder, script)
    print(load_average(), "(after)")
    # The median round (with an even count, the lower of the two middle ones).
    middle = sorted(rounds, key=lambda done: done.ratio)[(len(rounds) - 1) // 2]
    verdict = "met" if middle.ratio >= TARGET_RATIO else "MISSED"
    print(f"median round: {round_line(middle)}")
    print(
        f"ratio cart/bare, median of {len(rounds)}: {middle.ratio:.3f} (target >= "
        f"{TARGET_RATIO:g}: {verdict})"
    )
    worst_lag = max(done.lag_s for done in rounds)
    print(
        f"billing's largest lag when a window ended: {worst_lag:.2f} s of commands (target < "
        f"{TARGET_LAG_S:g} s: {'met' if worst_lag < TARGET_LAG_S else 'MISSED'})"
    )
    problems = []
    failed = sum(done.bare.failed for done in rounds), sum(done.ours.load.failed for done in rounds)
    if any(failed):
        problems.append(f"failed requests: bare {failed[0]}, cart {failed[1]}")
    if not drained:
        problems.append(f"billing did not apply every event within {DRAIN_TIMEOUT_S:g} s")
    if any(done.ratio == 0.0 for done in rounds):
        problems.append("the bare app answered nothing in a window")
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
