"""Real processes over one data folder: the cart service is restarted with `MSC_SERIALIZER`
switched between JSON and Protobuf, so one store and one `cart.events` stream mix both, and
billing still bills every cart right; `msc events list` shows all of them decoded, and
`msc snapshots rebuild` leaves every cart loading as before."""

from __future__ import annotations

import random
import sqlite3
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import pytest

from microservice_connector.billing_service.infrastructure.tables import DEFAULT_PRICES
from support.nats import NatsServer
from support.processes import free_port, msc_service, run_msc, wait_for
from support.system import expected_bill

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

ITEMS = [*sorted(DEFAULT_PRICES)[:4], "item-unpriced"]


def cart_service(stack: ExitStack, data_dir: Path, env: dict[str, str], name: str) -> str:
    """Start `msc cart-service` (with its relay) on a free port; its base URL."""
    port = free_port()
    args = ["cart-service", "--port", str(port), "--data-dir", str(data_dir)]
    base = f"http://127.0.0.1:{port}"
    stack.enter_context(
        msc_service(args, health_url=f"{base}/healthz", log=data_dir / f"{name}.log", env=env)
    )
    return base


def shop(http: httpx.Client, base: str, carts: list[str], commands: int, seed: int) -> None:
    """Random adds and removes; refusals (409, 404) are part of the game."""
    rng = random.Random(seed)
    for _ in range(commands):
        cart, item = rng.choice(carts), rng.choice(ITEMS)
        if rng.random() < 0.75:
            body = {"item_id": item, "quantity": rng.randint(1, 4)}
            response = http.post(f"{base}/carts/{cart}/items", json=body)
        else:
            response = http.delete(f"{base}/carts/{cart}/items/{item}", params={"quantity": 1})
        assert response.status_code in (200, 404, 409), response.text


def content_types(data_dir: Path) -> set[str]:
    with closing(sqlite3.connect(data_dir / "events.db")) as db:
        rows = db.execute("SELECT json_extract(metadata, '$.content_type') FROM events")
        return {content_type for (content_type,) in rows}


def test_billing_bills_right_from_a_stream_mixing_json_and_protobuf(tmp_path: Path) -> None:
    carts = [f"mixed-{n}" for n in range(8)]
    http = httpx.Client(timeout=30)
    with ExitStack() as stack:
        nats = stack.enter_context(NatsServer(tmp_path / "nats"))
        env = {"MSC_NATS_URL": nats.url, "MSC_SNAPSHOT_EVERY": "4"}
        billing_port = free_port()
        billing = f"http://127.0.0.1:{billing_port}"
        stack.enter_context(
            msc_service(
                ["billing-service", "--port", str(billing_port), "--data-dir", str(tmp_path)],
                health_url=f"{billing}/healthz",
                log=tmp_path / "billing.log",
                env=env,
            )
        )
        for phase, serializer in enumerate(["json", "protobuf", "json", "protobuf"]):
            with ExitStack() as cart_process:
                base = cart_service(
                    cart_process, tmp_path, {**env, "MSC_SERIALIZER": serializer}, f"cart-{phase}"
                )
                shop(http, base, carts, commands=40, seed=phase)
                if phase == 3:  # the last one checks out every other cart, and stays up
                    for cart in carts[::2]:
                        http.post(f"{base}/carts/{cart}/checkout")
                    stack.enter_context(cart_process.pop_all())
        assert content_types(tmp_path) == {"application/json", "application/x-protobuf"}

        state = {cart: http.get(f"{base}/carts/{cart}").json() for cart in carts}

        def billed() -> bool:
            bills = [http.get(f"{billing}/billing/carts/{cart}") for cart in carts]
            return all(
                b.status_code == 200 and b.json()["last_version"] == state[c]["version"]
                for b, c in zip(bills, carts, strict=True)
            )

        wait_for(billed, 60, "billing to apply every cart's events")
        for cart in carts:
            bill = http.get(f"{billing}/billing/carts/{cart}").json()
            lines = expected_bill(state[cart])["lines"]
            assert bill["lines"] == lines, cart
            assert bill["checked_out"] == (state[cart]["status"] == "checked_out")
            if bill["checked_out"]:
                invoice = http.get(f"{billing}/invoices/{cart}").json()
                assert invoice["total_cents"] == sum(ln["amount_cents"] for ln in lines.values())

    listed = run_msc(
        "events", "list", "--data-dir", str(tmp_path), "--limit", "1000", env={"COLUMNS": "300"}
    )
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "mixed-" in line]
    assert {"json", "protobuf"} <= {cell.strip() for row in rows for cell in row.split("│")}
    assert all('"item_id":"item-' in row or "CartCheckedOut" in row for row in rows)


def test_msc_snapshots_rebuild_leaves_every_cart_as_it_was(tmp_path: Path) -> None:
    carts = [f"snap-{n}" for n in range(3)]
    http = httpx.Client(timeout=30)
    env = {"MSC_SNAPSHOT_EVERY": "0", "MSC_SERIALIZER": "protobuf"}
    with ExitStack() as stack:
        base = cart_service(stack, tmp_path, {**env, "MSC_NATS_URL": "nats://127.0.0.1:1"}, "a")
        shop(http, base, carts, commands=60, seed=7)
        before = {cart: http.get(f"{base}/carts/{cart}").json() for cart in carts}
    versions = {cart: before[cart]["version"] for cart in carts}

    rebuilt = run_msc("snapshots", "rebuild", "--every", "10", "--data-dir", str(tmp_path))
    assert rebuilt.returncode == 0, rebuilt.stderr
    taken = sum(v >= 10 for v in versions.values())
    assert f"took {taken} snapshot(s) of carts with at least 10 events" in rebuilt.stdout
    with closing(sqlite3.connect(tmp_path / "events.db")) as db:
        stored = dict(db.execute("SELECT aggregate_id, version FROM snapshots").fetchall())
    assert stored == {cart: v for cart, v in versions.items() if v >= 10}

    with ExitStack() as stack:
        base = cart_service(stack, tmp_path, {**env, "MSC_NATS_URL": "nats://127.0.0.1:1"}, "b")
        assert {cart: http.get(f"{base}/carts/{cart}").json() for cart in carts} == before

    cleared = run_msc("snapshots", "rebuild", "--every", "0", "--data-dir", str(tmp_path))
    assert cleared.returncode == 0, cleared.stderr
    assert f"deleted {len(stored)} snapshot(s)" in cleared.stdout
