"""The few statements whose spelling differs between Postgres and SQLite (the embedded default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
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
