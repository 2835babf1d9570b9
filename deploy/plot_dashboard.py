"""Draw docs/dashboard.png: the dashboard's main series from a real run, as a picture.

No Grafana can be installed on the project's machine, so this plots the same PromQL the
dashboard uses. It starts `msc up` and a real Prometheus (Debian package) scraping it with
deploy/prometheus.yml pointed at local ports, sends a minute of mixed commands (with a
broker outage in the middle), then queries Prometheus and plots. Run by hand:

    .venv/bin/pip install matplotlib && .venv/bin/python deploy/plot_dashboard.py
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

from microservice_connector.runtime.system import System, free_port  # noqa: E402

ROOT = Path(__file__).parents[1]
PANELS = [
    ("Commands/s by outcome", "sum by (outcome) (rate(msc_cart_commands_total[10s]))"),
    ("Outbox pending rows", "msc_outbox_pending_rows"),
    ("Billing events/s by outcome", "sum by (outcome) (rate(msc_billing_events_total[10s]))"),
    (
        "Command latency p99 (s)",
        "histogram_quantile(0.99, sum by (le) (rate(msc_cart_command_duration_seconds_bucket[10s])))",
    ),
]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="msc-dashboard-"))
    cart_port, billing_port, prom_port = free_port(), free_port(), free_port()
    with System(work, cart_port, billing_port) as system:
        config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        targets = {"cart-service": cart_port, "billing-service": billing_port}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{targets[job['job_name']]}"]}]
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(ROOT / "deploy" / "alerts.yml", work / "alerts.yml")
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        start = time.time()
        drive(f"http://127.0.0.1:{cart_port}", system, seconds=60)
        time.sleep(5)
        end = time.time()
        plot(f"http://127.0.0.1:{prom_port}", start, end, ROOT / "docs" / "dashboard.png")
        prometheus.send_signal(signal.SIGTERM)
        prometheus.wait()


def drive(cart: str, system: System, seconds: float) -> None:
    rng = random.Random(1)
    nats = next(part for part in system.parts if part.name == "nats-server")
    deadline = time.time() + seconds
    with httpx.Client(timeout=10) as http:
        while (now := time.time()) < deadline:
            if abs(now - (deadline - seconds / 2)) < 0.05 and nats.alive():
                nats.process.send_signal(signal.SIGSTOP)  # broker stalls for 10 s
                stalled = now
            if nats.process.poll() is None and "stalled" in locals() and now - stalled > 10:
                nats.process.send_signal(signal.SIGCONT)
                del stalled
            cart_id = f"cart-{rng.randrange(200)}"
            if rng.random() < 0.85:
                http.post(
                    f"{cart}/carts/{cart_id}/items",
                    json={"item_id": f"item-00{rng.randint(1, 6)}", "quantity": 1},
                )
            else:
                http.post(f"{cart}/carts/{cart_id}/checkout")
            time.sleep(0.01)
        nats.process.send_signal(signal.SIGCONT)


def plot(prometheus: str, start: float, end: float, out: Path) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(12, 7))
    for axis, (title, query) in zip(axes.flat, PANELS, strict=True):
        body = httpx.get(
            f"{prometheus}/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": 1},
        ).json()
        for series in body["data"]["result"]:
            xs = [float(t) - start for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            axis.plot(xs, ys, label=",".join(series["metric"].values()) or query.split("(")[0])
        axis.set_title(title)
        axis.set_xlabel("seconds")
        axis.legend(fontsize=7)
    figure.suptitle(
        "Microservice Connector — dashboard series from a real run (NATS stalled 10 s mid-run)"
    )
    figure.tight_layout()
    out.parent.mkdir(exist_ok=True)
    figure.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
