"""The cart service as a real process: concurrency, a new user's CLI session, hostile input."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from support.processes import cart_service, run_msc

pytestmark = pytest.mark.e2e


async def concurrent_adds(bases: Sequence[str], cart: str, count: int) -> list[httpx.Response]:
    """`count` adds of 1..count items to one cart, at once, spread over `bases`."""
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{bases[i % len(bases)]}/carts/{cart}/items",
                    json={"item_id": "item-001", "quantity": i + 1},
                )
                for i in range(count)
            )
        )


def assert_sum_of_accepted_adds(responses: list[httpx.Response], final: dict[str, object]) -> None:
    statuses = [r.status_code for r in responses]
    assert 500 not in statuses
    assert set(statuses) <= {200, 409}, statuses
    accepted = sum(
        json.loads(r.request.content)["quantity"] for r in responses if r.status_code == 200
    )
    assert statuses.count(200) >= len(statuses) // 2, "most adds should win within the retries"
    assert final["items"] == {"item-001": accepted}
    assert final["version"] == statuses.count(200)


def test_fifty_concurrent_adds_to_one_cart_on_sqlite(tmp_path: Path) -> None:
    with cart_service(tmp_path) as base:
        responses = asyncio.run(concurrent_adds([base], "cart-hot", 50))
        final = httpx.get(f"{base}/carts/cart-hot").json()
    assert_sum_of_accepted_adds(responses, final)


@pytest.mark.postgres
def test_fifty_concurrent_adds_from_two_processes_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    with ExitStack() as stack:
        bases = [
            stack.enter_context(cart_service(tmp_path / name, database_url=postgres_url))
            for name in ("one", "two")
        ]
        responses = asyncio.run(concurrent_adds(bases, "cart-hot", 50))
        final = httpx.get(f"{bases[0]}/carts/cart-hot").json()
        assert httpx.get(f"{bases[1]}/carts/cart-hot").json() == final
    assert_sum_of_accepted_adds(responses, final)


def test_a_new_users_session_with_the_cli(tmp_path: Path) -> None:
    with cart_service(tmp_path) as base:
        env = {"MSC_CART_URL": base}
        added = run_msc("cart", "add", "cart-123", "item-001", "2", env=env)
        assert added.returncode == 0, added.stderr
        assert "item-001" in added.stdout
        assert "version 1" in added.stdout
        shown = run_msc("cart", "show", "cart-123", env=env)
        assert shown.returncode == 0
        assert "item-001" in shown.stdout
        removed = run_msc("cart", "remove", "cart-123", "item-001", "--quantity", "1", env=env)
        assert removed.returncode == 0
        assert "version 2" in removed.stdout
        listed = run_msc("events", "list", "--data-dir", str(tmp_path))
        assert listed.returncode == 0, listed.stderr
        assert "ItemAdded" in listed.stdout
        assert "ItemRemoved" in listed.stdout
        for args, fragment in [
            (["cart", "add", "a b", "item-001", "1"], "is not an id"),
            (["cart", "add", "x'; DROP TABLE events;--", "i", "1"], "is not an id"),
            (["cart", "add", "c", "item-001", "0"], "quantity"),
            (["cart", "add", "c", "item-001", "-1"], ""),
            (["cart", "add", "c", "item-001", str(10**9)], "quantity"),
            (["cart", "show", "ghost"], "not found"),
        ]:
            result = run_msc(*args, env=env)
            assert result.returncode != 0, args
            assert "Traceback" not in result.stderr + result.stdout
            assert fragment in result.stderr + result.stdout, (args, result.stderr)
        checked_out = run_msc("cart", "checkout", "cart-123", env=env)
        assert checked_out.returncode == 0
        assert "checked_out" in checked_out.stdout

    rows = sqlite3.connect(tmp_path / "events.db").execute("SELECT * FROM events").fetchall()
    assert [row[5] for row in rows] == ["ItemAdded", "ItemRemoved", "CartCheckedOut"]
    assert json.loads(rows[0][6]) == {
        "cart_id": "cart-123",
        "item_id": "item-001",
        "quantity": 2,
        "timestamp": json.loads(rows[0][6])["timestamp"],
    }


def test_the_cli_sends_the_write_token_on_commands_and_the_read_token_on_reads(
    tmp_path: Path,
) -> None:
    tokens = {"MSC_API_TOKEN": "write-secret", "MSC_READ_TOKEN": "read-secret"}
    with cart_service(tmp_path, env=tokens) as base:
        assert httpx.get(f"{base}/carts/locked").status_code == 401  # reads are locked
        for env in ({"MSC_API_TOKEN": "write-secret"}, tokens):
            client = {"MSC_CART_URL": base, **env}
            added = run_msc("cart", "add", "locked", "item-001", "1", env=client)
            assert added.returncode == 0, added.stderr
            shown = run_msc("cart", "show", "locked", env=client)
            assert shown.returncode == 0, shown.stderr
            assert "item-001" in shown.stdout
        refused = run_msc("cart", "show", "locked", env={"MSC_CART_URL": base})
        assert refused.returncode != 0
        assert "401" in refused.stderr + refused.stdout
        assert "Traceback" not in refused.stderr + refused.stdout


def test_the_cli_explains_an_unreachable_service() -> None:
    result = run_msc("cart", "show", "c", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach the cart service" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("postgresql://postgres@127.0.0.1:9/nope", "unavailable"),
        ("mysql://root@127.0.0.1/test", "unsupported database"),
        ("not a url", "not a database URL"),
        ("sqlite:////dev/null/events.db", "cannot"),
    ],
)
def test_a_bad_database_url_is_a_clear_error(tmp_path: Path, url: str, fragment: str) -> None:
    for args in (["cart-service", "--port", "9"], ["events", "list"]):
        result = run_msc(*args, "--database-url", url, timeout=30)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        # An inspection refuses a SQLite file that is not there before it tries to make one.
        missing = args[0] == "events" and url.startswith("sqlite")
        assert ("no database at" if missing else fragment) in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_help_explains_every_command() -> None:
    for args in (
        [],
        ["cart-service"],
        ["events"],
        ["events", "list"],
        ["cart"],
        ["cart", "add"],
        ["cart", "remove"],
        ["cart", "checkout"],
        ["cart", "show"],
    ):
        result = run_msc(*args, "--help")
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout
