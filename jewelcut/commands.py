"""Core commands: `db upgrade|downgrade` and `queue` (registered by jewelcut.cli)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    pass

console = Console(stderr=True)
db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (Postgres or SQLite, from the settings)."""
    from jewelcut.migrate import current_revision, upgrade
    from jewelcut.settings import get_settings

    url = get_settings().resolved_database_url
    upgrade(url, revision)
    console.print(f"database at revision [bold]{current_revision(url)}[/bold]")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")],
) -> None:
    """Revert migrations down to REVISION (`base` drops every table)."""
    from jewelcut.migrate import current_revision, downgrade
    from jewelcut.settings import get_settings

    url = get_settings().resolved_database_url
    downgrade(url, revision)
    console.print(f"database at revision [bold]{current_revision(url) or 'base'}[/bold]")


def queue() -> None:
    """Chunk messages waiting per queue (the broker), and unfinished rows (Postgres)."""
    from jewelcut.queue import CHUNK_QUEUES, CONTROL_QUEUE, backlog, queue_depth
    from jewelcut.services import require_broker, require_database
    from jewelcut.settings import get_settings

    settings = get_settings()
    require_database(settings)
    require_broker(settings)
    if settings.embedded:
        print("embedded mode: no broker, chunks run in-process")
    else:
        for name in (*CHUNK_QUEUES, CONTROL_QUEUE):
            print(f"queue {name}: {queue_depth(settings, name)} chunk messages waiting")
    rows = backlog(settings)
    print(
        f"rows queued: {rows.queued}, processing: {rows.processing} "
        f"(past the {settings.processing_timeout_s}s timeout: {rows.stale})"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(db_app, name="db")
    app.command("queue")(queue)
