"""What every `msc` command shares: options, settings, and clear exits on failure."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from microservice_connector.settings import Settings

if TYPE_CHECKING:  # sqlalchemy is imported only by the commands that need it
    from sqlalchemy.engine import URL

console = Console()
errors = Console(stderr=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Folder for events.db and billing.db (env MSC_DATA_DIR; default ./data)"
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Event store URL, sqlite:///PATH or postgresql://USER@HOST/DB "
        "(env MSC_DATABASE_URL; default sqlite:///<data-dir>/events.db)",
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with the command line's non-None values on top."""
    try:
        # Given to the constructor, the command line's values are validated as the
        # environment's are (a copy with them would take any value as it is).
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        fail(f"bad configuration: {problems}", 2)


def existing_database(url: str) -> str:
    """`url`, or a clear exit (code 2) when it names no database that holds an event store
    (its `events` table): a command that inspects a store must neither create an empty one at
    a mistyped path nor give another program's database the store's tables."""
    from microservice_connector.eventstore import DatabaseUnavailable
    from microservice_connector.eventstore.engine import parse_database_url

    try:
        parsed = parse_database_url(url)
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)
    shown = parsed.render_as_string(hide_password=True)
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not path.startswith("file:") and not Path(path).exists():
        fail(
            f"no database at {path}: nothing was stored there "
            "(check --data-dir and the database URL)",
            2,
        )
    try:
        holds_store = _holds_events_table(url, parsed)
    except DatabaseUnavailable as exc:
        fail(str(exc), 2)
    if not holds_store:
        fail(
            f"{shown} holds no event store (no events table): nothing was changed "
            "(check --data-dir and the database URL)",
            2,
        )
    return url


def _holds_events_table(url: str, parsed: URL) -> bool:
    """Whether the database at `url` (`parsed`) has an `events` table, looked up without
    writing (a SQLite file is opened read-only); `DatabaseUnavailable` if it cannot be read."""
    import sqlite3

    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from microservice_connector.eventstore import DatabaseUnavailable
    from microservice_connector.eventstore.engine import describe_failure, make_engine

    if parsed.get_backend_name() == "sqlite":
        try:
            read_only = f"{Path(parsed.database or '').absolute().as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(read_only, uri=True)) as connection:
                found = connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
                ).fetchone()
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"cannot read {parsed.database}: {exc}") from exc
        return found is not None
    engine = make_engine(url, pool_size=1)
    try:
        return inspect(engine).has_table("events")
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(describe_failure(engine, exc)) from exc
    finally:
        engine.dispose()


def _problem(error: Any) -> str:
    """One validation error as `MSC_NAME: what is wrong`; a check across settings names its
    setting in its own message."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"MSC_{'_'.join(str(p) for p in error['loc']).upper()}: {message}"
