"""Migrations: upgrade an empty Postgres and SQLite database to head, match the models exactly,
downgrade to base (nothing left) and upgrade again."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Base
from jewelcut.migrate import current_revision, downgrade, upgrade

INITIAL_TABLES = {"images", "model_versions", "runs", "segmentations"}
TABLES = INITIAL_TABLES | {"gates", "review_queue", "reviews"}  # 0004_reviews


def _schema_differences(url: str) -> list[object]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _upgrade_downgrade_upgrade(url: str) -> None:
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) is not None
    assert _tables(url) == TABLES
    assert _schema_differences(url) == []  # the migrations are jewelcut/db.py, exactly
    downgrade(url, "base")
    assert current_revision(url) is None
    assert _tables(url) == set()
    upgrade(url)
    assert _tables(url) == TABLES


def test_postgres_upgrade_downgrade_upgrade(empty_postgres_url: str) -> None:
    _upgrade_downgrade_upgrade(empty_postgres_url)


def test_sqlite_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    _upgrade_downgrade_upgrade(f"sqlite:///{tmp_path / 'jewelcut.db'}")


def test_initial_revision_is_0001_in_a_new_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new-folder' / 'jewelcut.db'}"
    upgrade(url, "0001_initial")
    assert current_revision(url) == "0001_initial"
    assert _tables(url) == INITIAL_TABLES


def test_db_commands_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_postgres_url: str
) -> None:
    """`jewelcut db upgrade` needs no alembic.ini in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JEWELCUT_DATABASE_URL", empty_postgres_url)
    from jewelcut.settings import reset_settings_cache

    reset_settings_cache()
    runner = CliRunner()
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert _tables(empty_postgres_url) == TABLES
    result = runner.invoke(app, ["db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert _tables(empty_postgres_url) == set()
    reset_settings_cache()
