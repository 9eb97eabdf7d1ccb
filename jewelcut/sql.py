"""The few statements whose spelling differs between Postgres and SQLite (the embedded default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def _insert(connection: Connection, table: Table) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    if connection.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"database {connection.dialect.name!r} is not supported")


def insert_ignore_statement(connection: Connection, table: Table, keys: Sequence[str]) -> Any:
    """INSERT .. ON CONFLICT (keys) DO NOTHING: rows that exist already are left as they are."""
    return _insert(connection, table).on_conflict_do_nothing(index_elements=list(keys))


def upsert_statement(
    connection: Connection, table: Table, keys: Sequence[str], update: Sequence[str]
) -> Any:
    """INSERT .. ON CONFLICT (keys) DO UPDATE SET the `update` columns from the new row."""
    statement = _insert(connection, table)
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: statement.excluded[name] for name in update}
    )


def insert_ignore_many(
    connection: Connection, table: Table, keys: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    """Bulk INSERT .. ON CONFLICT DO NOTHING of rows that share their columns.

    On Postgres one statement takes each column as an array (INSERT .. SELECT unnest(...)):
    a 5,000-row page is one round trip instead of thousands of parameter sets.
    """
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(insert_ignore_statement(connection, table, keys), rows)
        return
    columns = list(rows[0])
    arrays = {f"c{i}": [row[name] for row in rows] for i, name in enumerate(columns)}
    types = [table.c[name].type.compile(dialect=connection.dialect) for name in columns]
    unnest = ", ".join(f"CAST(:c{i} AS {sql_type}[])" for i, sql_type in enumerate(types))
    statement = text(
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({unnest}) "
        f"ON CONFLICT ({', '.join(keys)}) DO NOTHING"
    )
    connection.execute(statement, arrays)
