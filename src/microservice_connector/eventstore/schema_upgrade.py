"""Additive upgrades: older databases get the nullable columns newer code declares, and the
wider strings and integers it declares where they used to be narrower."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.schema import CreateColumn

from microservice_connector.eventstore.errors import DatabaseUnavailable


def add_missing_columns(connection: Connection, tables: MetaData) -> list[str]:
    """Add to each existing table of `tables` the nullable columns it lacks, in the caller's
    transaction; returns them as `table.column`. A missing NOT NULL column cannot be added
    without a value for the old rows: `DatabaseUnavailable` names it instead."""
    preparer = connection.dialect.identifier_preparer
    added: list[str] = []
    for table, present in _existing_tables(connection, tables):
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise DatabaseUnavailable(
                    f"table {table.name} has no column {column.name}, which is NOT NULL and "
                    "cannot be added automatically: migrate this database by hand"
                )
            definition = CreateColumn(column).compile(dialect=connection.dialect)
            connection.execute(
                text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {definition}")
            )
            added.append(f"{table.name}.{column.name}")
    return added


def widen_columns(connection: Connection, tables: MetaData) -> list[str]:
    """Widen, in the caller's transaction, each existing column that is narrower than
    declared (a shorter VARCHAR, INTEGER where BIGINT is declared); returns them as
    `table.column`. Only PostgreSQL needs it: SQLite does not enforce either width."""
    if connection.dialect.name != "postgresql":
        return []
    preparer = connection.dialect.identifier_preparer
    widened: list[str] = []
    for table, present in _existing_tables(connection, tables):
        for column in table.columns:
            if column.name not in present or not _narrower(present[column.name], column):
                continue
            declared = column.type.compile(dialect=connection.dialect)
            connection.execute(
                text(
                    f"ALTER TABLE {preparer.format_table(table)} ALTER COLUMN "
                    f"{preparer.format_column(column)} TYPE {declared}"
                )
            )
            widened.append(f"{table.name}.{column.name}")
    return widened


def _existing_tables(
    connection: Connection, tables: MetaData
) -> Iterator[tuple[Table, dict[str, Any]]]:
    """Each table of `tables` the database has, with the types of its columns by name."""
    inspector = inspect(connection)
    for table in tables.sorted_tables:
        if inspector.has_table(table.name):
            columns = inspector.get_columns(table.name)
            yield table, {column["name"]: column["type"] for column in columns}


def _narrower(present: Any, column: Column[Any]) -> bool:
    declared = column.type
    if isinstance(declared, String) and isinstance(present, String):
        return bool(present.length and declared.length and present.length < declared.length)
    return (
        isinstance(declared, BigInteger)
        and isinstance(present, Integer)
        and not isinstance(present, BigInteger)
    )
