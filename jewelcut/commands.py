"""Core commands: `db upgrade|downgrade`, `enqueue`, `queue`, `worker` (registered by
jewelcut.cli)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from jewelcut.settings import Settings

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


def enqueue(
    image_ids: Annotated[
        list[str] | None, typer.Argument(help="Image IDs; '-' reads them from stdin.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A file of image IDs, one a line.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Reprocess images already done or failed.")] = False,
    model_version: Annotated[
        str | None, typer.Option(help="Model version; default: the active one.")
    ] = None,
) -> None:
    """Record chosen images as queued and send them to the priority queue (idempotent)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from jewelcut.enqueue import enqueue_images
    from jewelcut.logs import configure_logging
    from jewelcut.services import require_broker, require_database
    from jewelcut.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    require_database(settings)
    require_broker(settings)
    ids, total = _image_ids(image_ids or [], file)
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("enqueue", total=total)
            summary = enqueue_images(
                ids,
                settings,
                model_version=model_version,
                force=force,
                on_batch=lambda n: progress.advance(task, n),
            )
    except (LookupError, FileNotFoundError) as error:  # no such model version
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(code=2) from error
    console.print(
        f"run {summary.run_id} ({summary.model_version}): {summary.requested} IDs, "
        f"{summary.queued} queued, {summary.reset} reset, "
        f"{summary.already_recorded} already recorded, {summary.unknown} unknown; "
        f"{summary.chunks} chunks sent to the priority queue"
        + (" (run in-process: embedded mode)" if settings.embedded else ""),
        soft_wrap=True,
    )
    if summary.unknown and not summary.sent:
        raise typer.Exit(code=1)


def _image_ids(arguments: list[str], file: Path | None) -> tuple[Iterator[str], int | None]:
    """The IDs to enqueue and how many there are (None when read from stdin)."""
    if file is not None:
        with file.open() as handle:
            total = sum(1 for _ in handle)
        return _lines(file), total
    if arguments == ["-"]:
        return (line for line in sys.stdin), None
    if not arguments:
        raise typer.BadParameter("give image IDs, --file F, or '-' to read stdin")
    return iter(arguments), len(arguments)


def _lines(path: Path) -> Iterator[str]:
    """A file's lines, streamed (a list of millions of IDs never sits in memory at once)."""
    with path.open() as handle:
        yield from handle


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


def worker(
    queues: Annotated[str, typer.Option(help="Queues to consume, in order.")] = "priority,bulk",
    gpu: Annotated[
        int | None, typer.Option(help="GPU index for this process (one worker per GPU).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "INFO",
    preload: Annotated[bool, typer.Option(help="Load the active model before consuming.")] = True,
) -> None:
    """Start one worker process (solo pool: no fork after CUDA init). Run one per GPU."""
    if gpu is not None:
        # Before torch is imported: this process sees only its own GPU, as cuda:0.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
        os.environ["JEWELCUT_DEVICE"] = device or "cuda"
    elif device:
        os.environ["JEWELCUT_DEVICE"] = device
    from jewelcut.logs import configure_logging
    from jewelcut.metrics import serve_metrics, watch_queue_depth
    from jewelcut.queue import CHUNK_QUEUES, configure_app, queue_depth
    from jewelcut.services import require_broker, require_database
    from jewelcut.settings import get_settings, reset_settings_cache

    reset_settings_cache()
    settings = get_settings()
    if settings.embedded:
        raise typer.BadParameter("no broker configured (JEWELCUT_BROKER_URL): nothing to consume")
    configure_logging(settings)
    # Refuse to start rather than fail every chunk (or retry the broker for ever).
    require_database(settings)
    require_broker(settings)
    serve_metrics(settings.metrics_port)
    watch_queue_depth(partial(queue_depth, settings), CHUNK_QUEUES)
    app = configure_app(settings)
    if preload:
        _preload_model(settings)
    hostname = f"gpu{gpu}@{socket.gethostname()}" if gpu is not None else None
    argv = ["worker", "--pool=solo", "--concurrency=1", f"--queues={queues}"]
    argv += [f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "--task-events"]
    argv += [f"--hostname={hostname}"] if hostname else []
    app.worker_main(argv)


def _preload_model(settings: Settings) -> None:
    from worker.chunk import get_segmenter
    from worker.registry import active_model_version

    name = active_model_version(settings)
    segmenter = get_segmenter(name, settings)
    console.print(f"model {name} loaded on {segmenter.device} (batch {segmenter.batch_size})")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(db_app, name="db")
    app.command("enqueue")(enqueue)
    app.command("queue")(queue)
    app.command("worker")(worker)
