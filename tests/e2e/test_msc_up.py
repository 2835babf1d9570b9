"""`msc up` and `msc demo` as a new user meets them: one command, then Ctrl-C."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from support.processes import MSC, free_port, run_msc, wait_for
from support.tansu import tansu_or_skip

pytestmark = pytest.mark.e2e


def test_msc_demo_prints_an_invoice_on_its_own_defaults(tmp_path: Path) -> None:
    # The user's own settings are not the demo's: it wrote cart-123 into their database, and
    # failed with 401 under their MSC_API_TOKEN.
    own_database = tmp_path / "users-own.db"
    users_settings = {"MSC_DATABASE_URL": f"sqlite:///{own_database}", "MSC_API_TOKEN": "s3cret"}
    result = run_msc("demo", env=users_settings, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not own_database.exists()
    assert "invoice inv-cart-123" in result.stdout
    assert "CartCheckedOut" in result.stdout
    # 2 of item-001 at 19.99 plus 2 of item-002 at 5.50
    assert "50.98" in result.stdout


def _stopped(up: subprocess.Popen[str], sig: signal.Signals) -> str:
    """Send `sig` and return what `msc up` printed once it exited; killed (its parts die with
    it) if it has not exited within 60 s, so a failing test leaves nothing running."""
    up.send_signal(sig)
    try:
        output, _ = up.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        up.kill()
        up.communicate()
        raise
    return output


def _up(data_dir: Path, cart_port: int, billing_port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            MSC,
            "up",
            "--data-dir",
            str(data_dir),
            "--cart-port",
            str(cart_port),
            "--billing-port",
            str(billing_port),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_msc_up_runs_everything_stops_cleanly_and_carries_on(tmp_path: Path) -> None:
    cart_port, billing_port = free_port(), free_port()
    cart, billing = f"http://127.0.0.1:{cart_port}", f"http://127.0.0.1:{billing_port}"
    up = _up(tmp_path, cart_port, billing_port)
    try:
        wait_for(lambda: _answers(f"{billing}/readyz") and _answers(f"{cart}/readyz"), 60, "msc up")
        added = httpx.post(f"{cart}/carts/c-1/items", json={"item_id": "item-001", "quantity": 2})
        assert added.status_code == 200
        wait_for(lambda: _answers(f"{billing}/billing/carts/c-1"), 30, "billing to see c-1")
    finally:
        output = _stopped(up, signal.SIGINT)
    assert up.returncode == 0, output
    assert "stopped cleanly" in output
    assert f"http://127.0.0.1:{cart_port}" in output  # it said where it listens
    assert f"http://127.0.0.1:{cart_port}/ui/" in output  # and where the event browser is
    assert (tmp_path / "events.db").exists()
    assert (tmp_path / "billing.db").exists()
    assert (tmp_path / "nats").is_dir()

    again = _up(tmp_path, cart_port, billing_port)
    try:
        wait_for(lambda: _answers(f"{billing}/readyz"), 60, "msc up, second time")
        httpx.post(f"{cart}/carts/c-1/checkout").raise_for_status()
        wait_for(lambda: _answers(f"{billing}/invoices/c-1"), 30, "the invoice after a restart")
        invoice = httpx.get(f"{billing}/invoices/c-1").json()
        assert invoice["total_cents"] == 2 * 1999
    finally:
        output = _stopped(again, signal.SIGTERM)
    assert again.returncode == 0, output
    status = run_msc("outbox", "status", "--data-dir", str(tmp_path))
    assert "pending:   0" in status.stdout


@pytest.mark.kafka
def test_msc_up_with_kafka_embeds_tansu_and_carries_on_after_losing_it(tmp_path: Path) -> None:
    tansu_or_skip()
    cart_port, billing_port = free_port(), free_port()
    cart, billing = f"http://127.0.0.1:{cart_port}", f"http://127.0.0.1:{billing_port}"
    help_text = run_msc("up", "--help").stdout
    assert "memory only" in " ".join(help_text.split())

    up = _up(tmp_path, cart_port, billing_port, "--broker", "kafka")
    try:
        wait_for(lambda: _answers(f"{billing}/readyz") and _answers(f"{cart}/readyz"), 60, "msc up")
        added = httpx.post(f"{cart}/carts/c-1/items", json={"item_id": "item-001", "quantity": 2})
        assert added.status_code == 200
        wait_for(lambda: _answers(f"{billing}/billing/carts/c-1"), 30, "billing to see c-1")
    finally:
        output = _stopped(up, signal.SIGINT)
    assert up.returncode == 0, output
    assert "Kafka" in output

    # A new, empty Tansu: the outbox and billing's database carry the story on.
    again = _up(tmp_path, cart_port, billing_port, "--broker", "kafka")
    try:
        wait_for(lambda: _answers(f"{billing}/readyz"), 60, "msc up, second time")
        httpx.post(f"{cart}/carts/c-1/checkout").raise_for_status()
        wait_for(lambda: _answers(f"{billing}/invoices/c-1"), 30, "the invoice after a restart")
        assert httpx.get(f"{billing}/invoices/c-1").json()["total_cents"] == 2 * 1999
    finally:
        output = _stopped(again, signal.SIGTERM)
    assert again.returncode == 0, output


def readme_curl_commands() -> list[str]:
    """The curl lines of the README's "Try it" block, continuation lines joined."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## Try it", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [
        line.split("#")[0].strip()
        for line in joined.splitlines()
        if line.strip().startswith("curl")
    ]


def test_the_readmes_curl_examples_work(tmp_path: Path) -> None:
    commands = readme_curl_commands()
    assert len(commands) >= 10
    cart_port, billing_port = free_port(), free_port()
    up = _up(tmp_path, cart_port, billing_port)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{billing_port}/readyz"), 60, "msc up")
        for command in commands:
            command = command.replace(":8080", f":{cart_port}").replace(":8081", f":{billing_port}")
            command = command.replace("curl ", "curl -sS -f ", 1)

            def succeeds(command: str = command) -> bool:
                return subprocess.run(["bash", "-c", command], capture_output=True).returncode == 0

            # The invoice appears once billing has applied the checkout: poll, don't sleep.
            wait_for(succeeds, 10, command)
    finally:
        _stopped(up, signal.SIGTERM)


def test_msc_up_refuses_a_port_another_program_listens_on(tmp_path: Path) -> None:
    # It used to start, find the other program's /readyz answering, and say it was up.
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        result = run_msc(
            "up",
            "--data-dir",
            str(tmp_path),
            "--cart-port",
            str(taken),
            "--billing-port",
            str(free_port()),
            timeout=60,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {taken} on 127.0.0.1 is in use by another program" in " ".join(
        (result.stdout + result.stderr).split()
    )
    assert "is up" not in result.stdout
