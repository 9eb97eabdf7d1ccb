"""Alembic, run programmatically: `jewelcut db upgrade` needs no alembic.ini in the cwd."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from jewelcut.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not an ini option: a URL's '%' would upset configparser.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head", *, quiet: bool = False) -> None:
    """Migrate to `revision`; `quiet` keeps Alembic's INFO lines out (an embedded file migrated
    on the way to another command)."""
    _prepare_sqlite_folder(database_url)
    with _alembic_quiet(quiet):
        command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return _scripts().get_current_head()


def is_known_revision(revision: str) -> bool:
    """Whether this code has the migration `revision` (a newer version's database may not)."""
    from alembic.util import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(""))


@contextmanager
def _alembic_quiet(quiet: bool) -> Iterator[None]:
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    if quiet and not alembic_log.isEnabledFor(logging.DEBUG):
        alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(level)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection, _alembic_quiet(True):
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _prepare_sqlite_folder(database_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
