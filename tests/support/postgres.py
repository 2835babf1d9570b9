"""PostgreSQL for tests: find a server (DESIGN §7) and hand each test a fresh, empty schema.

The server comes from `MSC_TEST_POSTGRES_URL`, else the one on 127.0.0.1:5432, else a
throwaway cluster made with `initdb` on a free loopback port. Real PostgreSQL is required:
when none of the three works, `PostgresUnavailable` says what was tried and why it failed.
Under pytest-xdist each worker process gets a database of its own on that server
(`worker_database`): the schemas of one database are not apart enough for tests that run at
the same time (the event store's feed horizon and lock monitors look at the whole database).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from support.ports import WORKER_ENV_VAR, free_port

ENV_VAR = "MSC_TEST_POSTGRES_URL"
LOCAL_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 2
SCHEMA_PREFIX = "msc_t_"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be found or started; the message lists every attempt."""


def probe(url: str) -> str | None:
    """None if `url` answers `SELECT 1` within the connect timeout, else the reason it did not."""
    engine = create_engine(
        url, poolclass=NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not this server"; the reason is reported
        return _first_line(exc)
    finally:
        engine.dispose()
    return None


def _first_line(exc: BaseException) -> str:
    """The driver's own message of a database error (SQLAlchemy's wrapper dropped), first
    line only."""
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


@contextmanager
def server_url() -> Iterator[str]:
    """A reachable PostgreSQL server URL, for as long as the context lasts."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        reason = probe(explicit)
        if reason is not None:
            raise PostgresUnavailable(f"{ENV_VAR}={explicit} is not reachable: {reason}")
        yield explicit
        return
    local_reason = probe(LOCAL_URL)
    if local_reason is None:
        yield LOCAL_URL
        return
    try:
        cluster = ThrowawayCluster.start()
    except PostgresUnavailable as exc:
        raise PostgresUnavailable(
            "these tests need a real PostgreSQL server and found none:\n"
            f"  - {ENV_VAR} is not set\n"
            f"  - {LOCAL_URL}: {local_reason}\n"
            f"  - throwaway cluster: {exc}\n"
            f"Set {ENV_VAR}, start PostgreSQL on 127.0.0.1:5432 with trust auth, "
            "or install the PostgreSQL server binaries (initdb, pg_ctl)."
        ) from exc
    try:
        yield cluster.url
    finally:
        cluster.stop()


@contextmanager
def worker_database(server: str) -> Iterator[str]:
    """`server` itself in a single test process; in a pytest-xdist worker, a new database of
    the worker's own on it, dropped afterwards. An event store's feed waits for the positions
    in flight in its whole database, and tests watch the database's lock waiters, so two
    workers' tests in schemas of one database would slow or mislead each other."""
    worker = os.environ.get(WORKER_ENV_VAR)
    if not worker:
        yield server
        return
    name = f"msc_test_{worker}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:  # no CREATEDB right, most likely: say what to do
            raise PostgresUnavailable(
                f"test worker {worker} needs a database of its own on {server} and could not "
                f"create one: {_first_line(exc)}. Grant CREATEDB, or run the tests in one process "
                "(make test TEST_WORKERS=0)"
            ) from exc
        try:
            yield make_url(server).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                # Sessions a test left open would block the drop: end them first.
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        admin.dispose()


@contextmanager
def fresh_schema(server: str) -> Iterator[str]:
    """A URL whose connections see only a new, empty schema; the schema is dropped afterwards.

    Dispose of every engine made from the URL before the context ends.
    """
    schema = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, poolclass=NullPool)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = with_options(server, f"-csearch_path={schema}")
        seen = current_schema(url)
        if seen != schema:
            raise PostgresUnavailable(
                f"libpq options in the URL were ignored: current_schema() is {seen!r}, "
                f"not {schema!r}"
            )
        yield url
    finally:
        with admin.begin() as connection:
            # A connection left open by a test would block the drop forever; fail instead.
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def with_options(url: str, option: str) -> str:
    """`url` with `option` (e.g. `-ctimezone=UTC`) added to the libpq `options` it passes."""
    parsed = make_url(url)
    existing = parsed.query.get("options")
    if isinstance(existing, tuple):
        existing = " ".join(existing)
    combined = f"{existing} {option}" if existing else option
    return parsed.update_query_dict({"options": combined}).render_as_string(hide_password=False)


def current_schema(url: str) -> str | None:
    """What `current_schema()` answers on a new connection to `url`."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            schema: str | None = connection.execute(text("SELECT current_schema()")).scalar()
            return schema
    finally:
        engine.dispose()


@dataclass
class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary folder, listening on a free loopback port."""

    folder: Path
    pg_ctl: Path
    port: int
    user: pwd.struct_passwd | None

    @property
    def url(self) -> str:
        """The URL of its `postgres` database, superuser `postgres`, trust auth."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> ThrowawayCluster:
        """`initdb` and start a cluster; `PostgresUnavailable` says why it could not."""
        initdb = find_binary("initdb")
        if initdb is None:
            raise PostgresUnavailable("initdb not found on PATH or under /usr/lib/postgresql")
        pg_ctl = initdb.with_name("pg_ctl")
        if not pg_ctl.exists():
            pg_ctl = find_binary("pg_ctl") or pg_ctl
        user = _unprivileged_user()
        folder = Path(tempfile.mkdtemp(prefix="msc-pg-"))
        cluster = cls(folder=folder, pg_ctl=pg_ctl, port=free_port(), user=user)
        try:
            if user is not None:
                os.chown(folder, user.pw_uid, user.pw_gid)
            cluster._run([str(initdb), "--no-sync", "-E", "UTF8", "-U", "postgres", "-A", "trust"])
            server_options = (
                f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {folder} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            cluster._run(
                [str(pg_ctl), "start", "-w", "-t", "30", "-l", "server.log", "-o", server_options]
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            log = folder / "server.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            output = getattr(exc, "stdout", None) or ""
            cluster.stop()
            raise PostgresUnavailable(f"{exc}\n{output}{detail}".strip()) from exc
        reason = probe(cluster.url)
        if reason is not None:
            cluster.stop()
            raise PostgresUnavailable(f"started a cluster but cannot connect: {reason}")
        return cluster

    def stop(self) -> None:
        """Stop the server (if running) and remove its folder."""
        if (self.folder / "data" / "postmaster.pid").exists():
            # The folder goes anyway: a server whose lock file vanished shuts itself down.
            with suppress(OSError, subprocess.CalledProcessError):
                self._run([str(self.pg_ctl), "stop", "-w", "-m", "immediate"])
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, command: list[str]) -> None:
        # initdb and postgres refuse to run as root, hence the unprivileged user.
        subprocess.run(
            command,
            cwd=self.folder,
            env={**os.environ, "PGDATA": str(self.folder / "data")},
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            user=self.user.pw_uid if self.user else None,
            group=self.user.pw_gid if self.user else None,
            extra_groups=[] if self.user else None,
        )


def find_binary(name: str) -> Path | None:
    """`name` from PATH, else from the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return Path(found).resolve()
    candidates = [Path(path) for path in glob.glob(f"/usr/lib/postgresql/*/bin/{name}")]
    return max(candidates, key=_major_version, default=None)


def _major_version(binary: Path) -> int:
    release = binary.parents[1].name.split(".")[0]
    return int(release) if release.isdigit() else 0


def _unprivileged_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither user 'postgres' nor 'nobody' exists")
