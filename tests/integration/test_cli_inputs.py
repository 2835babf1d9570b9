"""What `msc` does with paths, settings and help texts a user gets wrong or reads: inspection
commands refuse a database that is not there instead of creating an empty one, error texts
reach the terminal whole, `msc up` listens where MSC_CART_PORT/MSC_BILLING_PORT say, and
`--help` shows each option's environment variable and default."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from microservice_connector.cli import services
from microservice_connector.cli.app import app
from microservice_connector.eventstore.engine import parse_database_url
from microservice_connector.web.guards import Receive, Scope, Send
from support.asgi_server import served
from support.nats import NatsServer

app_cli = app

runner = CliRunner()


def _answering(answer: object, status: int = 200) -> Callable[[Scope, Receive, Send], Any]:
    """An ASGI app answering every HTTP request with `answer` as JSON, status `status`."""
    body = json.dumps(answer).encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


# Every command that reads or rebuilds a store it must find there.
INSPECTIONS = [
    ["events", "list"],
    ["outbox", "status"],
    ["outbox", "status", "--billing"],
    ["snapshots", "rebuild"],
    ["billing", "rebuild", "--cart-url", "http://127.0.0.1:1"],
]


@pytest.mark.parametrize("command", INSPECTIONS)
def test_an_inspection_of_a_missing_database_fails_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo"
    result = runner.invoke(app, [*command, "--data-dir", str(missing)])
    assert result.exit_code == 2, result.output
    assert "no database at" in result.output
    assert str(missing) in result.output
    assert not missing.exists()


@pytest.mark.parametrize("command", INSPECTIONS)
def test_an_inspection_of_another_programs_database_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    # They created the store's tables in it, and switched a SQLite file to WAL.
    foreign = tmp_path / "foreign.db"
    with contextlib.closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE other (x)")
        db.commit()
    before = foreign.read_bytes()
    for name in ("MSC_DATABASE_URL", "MSC_BILLING_DATABASE_URL"):
        monkeypatch.setenv(name, f"sqlite:///{foreign}")
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "holds no event store" in " ".join(result.output.split())
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.db"]


@pytest.mark.postgres
def test_an_inspection_of_a_postgresql_database_without_a_store_creates_no_table(
    postgres_url: str,
) -> None:
    result = runner.invoke(app, ["events", "list", "--database-url", postgres_url])
    assert result.exit_code == 2, result.output
    assert "holds no event store" in " ".join(result.output.split())
    engine = create_engine(parse_database_url(postgres_url))
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_an_error_text_with_brackets_is_shown_whole(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/[store]/events.db"
    result = runner.invoke(app, ["events", "list", "--database-url", url])
    assert result.exit_code == 2, result.output
    assert "[store]" in result.output.replace("\n", "")
    assert not (tmp_path / "[store]").exists()


@pytest.mark.parametrize("folder", ["data", "d#1", "with space"])
def test_an_existing_database_is_still_read(tmp_path: Path, folder: str) -> None:
    # The read-only look for the store's table once took '#' as URI syntax.
    from microservice_connector.eventstore import SqlEventStore

    data_dir = tmp_path / folder
    SqlEventStore(f"sqlite:///{data_dir}/events.db", outbox_topic=None).close()
    result = runner.invoke(app, ["events", "list", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert "no events" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]


@pytest.fixture
def started_system(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What `msc up` would start: the System's arguments, without starting anything."""
    seen: dict[str, Any] = {}

    def system(data_dir: Path, cart_port: int, billing_port: int, host: str, **_: Any) -> object:
        seen.update(cart_port=cart_port, billing_port=billing_port, host=host)
        return object()

    monkeypatch.setattr(services, "System", system)
    monkeypatch.setattr(services, "_run_until_signalled", lambda _system: None)
    return seen


def test_msc_up_listens_on_the_ports_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started_system: dict[str, Any]
) -> None:
    monkeypatch.setenv("MSC_CART_PORT", "18080")
    monkeypatch.setenv("MSC_BILLING_PORT", "18081")
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert started_system == {"cart_port": 18080, "billing_port": 18081, "host": "127.0.0.1"}


def test_msc_up_options_win_over_the_environment_and_defaults_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started_system: dict[str, Any]
) -> None:
    monkeypatch.setenv("MSC_CART_PORT", "18080")
    monkeypatch.delenv("MSC_BILLING_PORT", raising=False)
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--cart-port", "19090"])
    assert result.exit_code == 0, result.output
    assert started_system["cart_port"] == 19090
    assert started_system["billing_port"] == 8081


def test_msc_up_refuses_a_bad_port_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started_system: dict[str, Any]
) -> None:
    monkeypatch.setenv("MSC_CART_PORT", "not-a-port")
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "MSC_CART_PORT" in result.output
    assert started_system == {}


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        (["cart-service"], "env MSC_CART_PORT; default 8080"),
        (["cart-service"], "env MSC_HOST; default 127.0.0.1"),
        (["billing-service"], "env MSC_BILLING_PORT; default 8081"),
        (["up"], "env MSC_NATS_URL"),
        (["events", "list"], "env MSC_DATABASE_URL"),
        (["snapshots", "rebuild"], "env MSC_SNAPSHOT_EVERY; default 100"),
    ],
)
def test_help_names_each_options_environment_variable(command: list[str], hint: str) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert hint in result.output


def _billing_with_one_bill(data_dir: Path) -> None:
    from datetime import UTC, datetime

    from microservice_connector.billing_service.application import BillingLedger, CartEventIn
    from microservice_connector.billing_service.main import open_billing_repository
    from microservice_connector.events.cart import ItemAdded
    from microservice_connector.settings import Settings

    repository = open_billing_repository(Settings(data_dir=data_dir))
    added = ItemAdded("kept", "item-001", 2, datetime(2026, 12, 6, tzinfo=UTC))
    BillingLedger(repository).apply_batch([CartEventIn("ev-1", "kept", 1, added)])
    repository.close()


def _the_bill_is_kept(data_dir: Path) -> None:
    from microservice_connector.billing_service.main import open_billing_repository
    from microservice_connector.settings import Settings

    repository = open_billing_repository(Settings(data_dir=data_dir))
    try:
        bill = repository.bill("kept")
        assert bill is not None
        assert bill.last_version == 1
    finally:
        repository.close()


@pytest.mark.parametrize(
    ("cart_url", "says"),
    [
        ("http://127.0.0.1:1", "cannot read the feed"),
        ("garbage", "MSC_CART_URL: 'garbage' is not a URL like http://host:port"),
    ],
)
def test_a_rebuild_that_cannot_read_the_feed_drops_nothing(
    tmp_path: Path, cart_url: str, says: str
) -> None:
    _billing_with_one_bill(tmp_path)
    result = runner.invoke(
        app, ["billing", "rebuild", "--data-dir", str(tmp_path), "--cart-url", cart_url]
    )
    assert result.exit_code == 2, result.output
    assert says in result.output
    _the_bill_is_kept(tmp_path)


@pytest.mark.parametrize(
    "answer", [[], {"events": "x", "next_after": 1}, {"events": ["x"], "next_after": 1}]
)
def test_a_rebuild_from_something_that_is_not_the_feed_drops_nothing(
    tmp_path: Path, answer: object
) -> None:
    # A JSON answer of another shape ended in AttributeError.
    _billing_with_one_bill(tmp_path)
    with served(_answering(answer)) as port:
        url = f"http://127.0.0.1:{port}"
        result = runner.invoke(
            app, ["billing", "rebuild", "--data-dir", str(tmp_path), "--cart-url", url]
        )
    assert result.exit_code == 2, result.output
    assert "not the cart service's feed" in result.output
    assert "nothing was changed" in " ".join(result.output.split())
    _the_bill_is_kept(tmp_path)


def test_a_rebuild_whose_feed_holds_an_event_billing_cannot_read_drops_nothing(
    tmp_path: Path,
) -> None:
    _billing_with_one_bill(tmp_path)
    unknown = {
        "position": 1,
        "event_id": "ev-9",
        "event_type": "ItemGiftWrapped",  # of a newer cart service
        "aggregate_id": "kept",
        "version": 1,
        "schema_version": 1,
        "data": {"cart_id": "kept"},
    }
    with served(_answering({"events": [unknown], "next_after": 1})) as port:
        result = runner.invoke(
            app,
            [
                "billing",
                "rebuild",
                "--data-dir",
                str(tmp_path),
                "--cart-url",
                f"http://127.0.0.1:{port}",
            ],
        )
    said = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "cannot read an event of the feed after position 0" in said
    assert "ItemGiftWrapped" in said
    assert "nothing was changed" in said
    assert result.exception is None or isinstance(result.exception, SystemExit)
    _the_bill_is_kept(tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        ["cart", "checkout", "nonsense/../victim"],
        ["cart", "add", "x/../victim", "pear", "1"],
        ["cart", "remove", "victim", "apple/../pear"],
        ["cart", "remove", "victim", "x?quantity=1"],
        ["cart", "show", ""],
    ],
)
def test_msc_cart_refuses_an_id_the_service_would_not_take_and_sends_nothing(
    command: list[str],
) -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with served(app) as port:
        result = runner.invoke(app_cli, [*command, "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 2, result.output
    assert "is not an id" in result.output
    assert seen == []


def test_msc_cart_reaches_the_carts_named_dot_and_dot_dot(tmp_path: Path) -> None:
    from microservice_connector.cart_service.main import build_cart_app
    from microservice_connector.settings import Settings

    cart_app = build_cart_app(Settings(data_dir=tmp_path), relay=False)
    with served(cart_app) as port:
        url = f"http://127.0.0.1:{port}"
        for cart in (".", ".."):
            added = runner.invoke(app_cli, ["cart", "add", cart, "..", "2", "--url", url])
            assert added.exit_code == 0, added.output
            removed = runner.invoke(app_cli, ["cart", "remove", cart, "..", "--url", url])
            assert removed.exit_code == 0, removed.output
        shown = runner.invoke(app_cli, ["cart", "show", "..", "--url", url])
        assert shown.exit_code == 0, shown.output
        assert "version 2" in shown.output


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (200, {}, "answered 200 without a cart"),
        (200, [], "answered 200 without a cart"),
        (200, {"cart_id": "c1", "version": 1, "status": "open", "items": []}, "without a cart"),
        (400, ["not", "an", "object"], "400: ['not', 'an', 'object']"),
    ],
)
def test_msc_cart_says_so_when_the_answer_is_not_a_cart(
    status: int, body: object, says: str
) -> None:
    # A wrong --url (another service answering JSON) ended in KeyError or AttributeError.
    with served(_answering(body, status)) as port:
        result = runner.invoke(app_cli, ["cart", "show", "c1", "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1, result.output
    assert says in " ".join(result.output.split())
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["events", "list", "--database-url", "postgresql://::::"], "not a database URL"),
        (["asyncapi", "-o", "."], "cannot write .: Is a directory"),
        (["asyncapi", "-o", "missing/asyncapi.json"], "No such file or directory"),
    ],
)
def test_a_bad_path_or_url_is_one_line_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str], says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_msc_up_on_a_file_says_it_cannot_keep_data_there(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    result = runner.invoke(app, ["up", "--data-dir", str(a_file)])
    assert result.exit_code == 2, result.output
    assert f"cannot keep data in {a_file}" in result.output.replace("\n", "")


def test_replaying_a_dead_letter_that_is_not_there_says_so(nats_server: NatsServer) -> None:
    result = runner.invoke(app, ["deadletter", "replay", "999", "--nats-url", nats_server.url])
    assert result.exit_code == 1, result.output
    assert "999: no dead letter there" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("nats_url", ["nats://127.0.0.1:1", "no-such-host.invalid"])
def test_msc_up_says_at_once_that_the_nats_it_was_given_is_not_there(
    tmp_path: Path, nats_url: str
) -> None:
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--nats-url", nats_url])
    assert result.exit_code == 2, result.output
    assert f"cannot reach NATS at {nats_url}" in result.output.replace("\n", " ")
    assert not (tmp_path / "logs" / "cart-service.log").exists()  # nothing was started


def test_a_parts_log_tail_holds_only_what_this_run_wrote(tmp_path: Path) -> None:
    import sys

    from microservice_connector.runtime.system import System

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "echo.log").write_text("an earlier run's line\n")
    system = System(tmp_path, 1, 2)
    part = system._spawn("echo", [sys.executable, "-c", "print('this run')"], "")
    part.process.wait(timeout=30)
    assert part.tail() == "this run"


def test_msc_up_refuses_one_port_for_both_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, started_system: dict[str, Any]
) -> None:
    monkeypatch.setenv("MSC_BILLING_PORT", "18080")
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--cart-port", "18080"])
    assert result.exit_code == 2, result.output
    assert "cannot share port 18080" in result.output
    assert started_system == {}


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        # An empty NATS address list had the services spin at full CPU, deaf to SIGTERM.
        ("MSC_NATS_URL", "", "no NATS address"),
        ("MSC_NATS_URL", " , ", "no NATS address"),
        ("MSC_NATS_URL", "nats://[::1", "is not a URL (Invalid IPv6 URL)"),
        ("MSC_NATS_URL", "nats://a:4222,nats://b:99999", "'nats://b:99999' is not a URL"),
        ("MSC_NATS_URL", "http://a:4222", "is not a URL like nats://host:port"),
        ("MSC_CART_URL", "http://[::1", "is not a URL"),
        ("MSC_CART_URL", "localhost:8080", "is not a URL like http://host:port"),
        ("MSC_BILLING_URL", "http://999.1.1.1:8081", "999.1.1.1 is not an IPv4 address"),
        ("MSC_CART_STORE_URL", "ftp://cart", "is not a URL like http://host:port"),
        ("MSC_HOST", "", "give an address to listen on"),
        ("MSC_HOST", " 127.0.0.1", "give an address to listen on"),
        ("MSC_HOST", "999.1.1.1", "'999.1.1.1' is not an IPv4 address"),
        ("MSC_API_TOKEN", "caf\u00e9", "use visible ASCII characters only"),
        ("MSC_READ_TOKEN", "two words", "use visible ASCII characters only"),
        ("MSC_NATS_TLS_CA", "/no/such/ca.pem", "no such file: /no/such/ca.pem"),
        ("MSC_NATS_CREDENTIALS", "/no/such.creds", "no such file"),
        ("MSC_KAFKA_SSL_CAFILE", "/no/such/ca.pem", "no such file"),
        ("MSC_RELAY_LEASE_S", "nan", "Input should be a finite number"),
        ("MSC_IDEMPOTENCY_TTL_S", "inf", "Input should be a finite number"),
    ],
)
def test_a_setting_no_client_or_server_could_use_is_a_configuration_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    started_system: dict[str, Any],
    variable: str,
    value: str,
    says: str,
) -> None:
    monkeypatch.setenv(variable, value)
    for command in (["up", "--data-dir", str(tmp_path)], ["outbox", "status"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert f"{variable}: " in result.output
        assert says in " ".join(result.output.split())
    assert started_system == {}


@pytest.mark.parametrize(
    ("bootstrap", "says"),
    [
        ("garbage:::", "'garbage:::' is not host:port"),
        ("host:99999", "'host:99999' is not host:port"),
        ("host:port", "'host:port' is not host:port"),
        ("a b:9092", "'a b:9092' is not host:port"),
        (" , ", "no address"),
    ],
)
def test_a_kafka_bootstrap_that_is_not_host_port_is_a_configuration_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    started_system: dict[str, Any],
    bootstrap: str,
    says: str,
) -> None:
    monkeypatch.setenv("MSC_BROKER", "kafka")
    monkeypatch.setenv("MSC_KAFKA_BOOTSTRAP", bootstrap)
    from_env = runner.invoke(app, ["outbox", "status", "--data-dir", str(tmp_path)])
    monkeypatch.delenv("MSC_KAFKA_BOOTSTRAP")
    from_option = runner.invoke(app, ["deadletter", "list", "--kafka-bootstrap", bootstrap])
    up = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--kafka-bootstrap", bootstrap])
    for result in (from_env, from_option, up):
        assert result.exit_code == 2, result.output
        assert f"MSC_KAFKA_BOOTSTRAP: {says}" in " ".join(result.output.split())
    assert started_system == {}


@pytest.mark.parametrize(
    "bootstrap",
    [
        "kafka-1:9092, 10.0.0.2:19092,[::1]:9093,kafka-4",
        "k1:9092,k2:9092,",
        "::1",
        "[fe80::1%eth0]:9092",
    ],
)
def test_kafka_bootstrap_lists_of_names_addresses_and_ports_are_taken(
    monkeypatch: pytest.MonkeyPatch, bootstrap: str
) -> None:
    from microservice_connector.settings import Settings

    monkeypatch.setenv("MSC_BROKER", "kafka")
    monkeypatch.setenv("MSC_KAFKA_BOOTSTRAP", bootstrap)
    assert Settings().kafka_bootstrap == bootstrap


def test_on_nats_a_stale_kafka_bootstrap_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from microservice_connector.settings import Settings

    monkeypatch.setenv("MSC_KAFKA_BOOTSTRAP", "garbage:::")
    assert Settings().broker == "nats"


@pytest.mark.parametrize(
    "nats_url", ["localhost:4222", "127.0.0.1:4222", "nats://a:4222,b:4222", "tls://a", "h"]
)
def test_nats_addresses_the_client_takes_are_taken(nats_url: str) -> None:
    from microservice_connector.settings import Settings

    assert Settings(nats_url=nats_url).nats_url == nats_url


def test_on_kafka_an_unused_nats_url_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from microservice_connector.settings import Settings

    monkeypatch.setenv("MSC_BROKER", "kafka")
    monkeypatch.setenv("MSC_NATS_URL", "")
    assert Settings().nats_servers() == []


def test_msc_up_hides_the_credentials_of_a_nats_it_cannot_reach(tmp_path: Path) -> None:
    url = "nats://alice:s3cret@127.0.0.1:1"
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--nats-url", url])
    assert result.exit_code == 2, result.output
    assert "cannot reach NATS at nats://***@127.0.0.1:1" in result.output
    assert "s3cret" not in result.output


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("nats://h1", ("h1", 4222)),
        ("tls://h1", ("h1", 4222)),
        ("h1", ("h1", 4222)),
        ("ws://h1", ("h1", 80)),
        ("wss://h1", ("h1", 443)),
        ("wss://u:p@h1:8443", ("h1", 8443)),
        ("nats://[::1]:4333", ("::1", 4333)),
    ],
)
def test_the_nats_check_knocks_where_the_client_would_connect(
    monkeypatch: pytest.MonkeyPatch, url: str, address: tuple[str, int]
) -> None:
    from microservice_connector.runtime import system

    knocked: list[tuple[str, int]] = []

    class Accepted:
        def close(self) -> None:
            pass

    def connect(where: tuple[str, int], timeout: float) -> Accepted:
        knocked.append(where)
        return Accepted()

    monkeypatch.setattr(system.socket, "create_connection", connect)
    system.reachable_nats(url)
    assert knocked == [address]


def test_msc_up_stops_everything_cleanly_on_a_signal_while_it_prints_its_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The signal handler turns SIGTERM into KeyboardInterrupt: here it lands in the printing.
    class StartedSystem:
        data_dir = Path("unused")
        stopped = False

        def start(self) -> None:
            pass

        def stop(self) -> None:
            self.stopped = True

    def interrupted(_system: object) -> None:
        raise KeyboardInterrupt

    system = StartedSystem()
    monkeypatch.setattr(services, "_print_addresses", interrupted)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        services._run_until_signalled(system)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pytest.fail("the signal escaped `msc up`: it exits 130 and leaves its parts to die")
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert system.stopped
