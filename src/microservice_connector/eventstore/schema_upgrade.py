"""Additive upgrades: older databases get the nullable columns newer code declares."""

from __future__ import annotations

from sqlalchemy import Connection, MetaData, inspect, text
from sqlalchemy.schema import CreateColumn

from microservice_connector.eventstore.errors import DatabaseUnavailable


def add_missing_columns(connection: Connection, tables: MetaData) -> list[str]:
    """Add to each existing table of `tables` the nullable columns it lacks, in the caller's
    transaction; returns them as `table.column`. A missing NOT NULL column cannot be added
    without a value for the old rows: `DatabaseUnavailable` names it instead."""
    inspector = inspect(connection)
    preparer = connection.dialect.identifier_preparer
    added: list[str] = []
    for table in tables.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
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
