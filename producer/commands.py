"""CLI commands of the producer (registered on the root app by jewelcut.cli): `catalogue import`,
`enqueue`, `backfill`, `reap`, `report` and `demo`. No torch here: `demo` loads it inside its
body. Each command hands what it runs its chunk queue (producer.queueing.chunk_queue)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.console import Console
from rich.table import Table

from jewelcut.settings import Settings, get_settings
from producer.progress import progress_bar
from producer.queueing import chunk_queue

if TYPE_CHECKING:
    from producer.catalogue import ImportSummary

console = Console()

catalogue_app = typer.Typer(help="The catalogue of listing photos.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(catalogue_app, name="catalogue")
    app.command("enqueue")(enqueue)
    app.command("backfill")(backfill)
    app.command("reap")(reap)
    app.command("report")(report)
    app.command("demo")(demo)


def _settings(*, database: bool = True, broker: bool = False) -> Settings:
    """The settings, logging configured and the services the command needs checked."""
    from jewelcut.logs import configure_logging
    from jewelcut.services import require_broker, require_database

    settings = get_settings()
    configure_logging(settings)
    if database:
        require_database(settings)
    if broker:
        require_broker(settings)
    return settings


# --- catalogue import ------------------------------------------------------------------------


@catalogue_app.command("import")
def catalogue_import(
    csv_file: Annotated[
        str | None,
        typer.Option("--csv", help="CSV of image_id,listing_id,uri; '-' reads stdin."),
    ] = None,
    listing: Annotated[
        str | None,
        typer.Option(
            "--listing", help="s3://bucket/prefix or a folder; the image ID is the key's stem."
        ),
    ] = None,
) -> None:
    """Register listing photos in the catalogue (idempotent: importing twice changes nothing)."""
    from producer.catalogue import (
        ImportSummary,
        import_rows,
        rows_from_csv,
        rows_from_listing,
        storage_for_listing,
    )

    if (csv_file is None) == (listing is None):
        raise typer.BadParameter("give exactly one of --csv FILE|- and --listing LOCATION")
    settings = _settings()
    summary = ImportSummary()
    with progress_bar("importing", None) as bar:
        if csv_file is not None:
            with _csv_source(csv_file) as handle:
                rows = rows_from_csv(handle, summary.add_invalid)
                import_rows(settings, rows, summary, on_batch=bar.advance)
        else:
            try:
                storage, prefix = storage_for_listing(str(listing), settings)
            except ValueError as error:
                raise typer.BadParameter(str(error)) from error
            rows = rows_from_listing(storage, prefix, summary.add_invalid)
            import_rows(settings, rows, summary, on_batch=bar.advance)
    _print_import_summary(summary)


@contextmanager
def _csv_source(name: str) -> Iterator[TextIO]:
    if name == "-":
        yield sys.stdin
        return
    with Path(name).open(newline="") as handle:
        yield handle


def _print_import_summary(summary: ImportSummary) -> None:
    table = Table(title="Catalogue import", show_header=False)
    for name in ("read", "inserted", "updated", "unchanged", "duplicates", "invalid"):
        table.add_row(name, str(getattr(summary, name)))
    console.print(table)
    for message in summary.errors:
        console.print(f"[red]invalid[/red] {message}")


# --- admin enqueue ---------------------------------------------------------------------------


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
    from jewelcut.enqueue import enqueue_images
    from jewelcut.queue import PRIORITY_QUEUE

    settings = _settings(broker=True)
    ids, total = _image_ids(image_ids or [], file)
    try:
        with progress_bar("enqueue", total) as bar:
            summary = enqueue_images(
                ids,
                settings,
                chunk_queue(settings, PRIORITY_QUEUE),
                model_version=model_version,
                force=force,
                on_batch=bar.advance,
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


# --- backfill --------------------------------------------------------------------------------


def backfill(
    limit: Annotated[int | None, typer.Option(help="Enqueue at most this many images.")] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only images added since (UTC, e.g. 2026-11-01).")
    ] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Model version; default the active one.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be enqueued; change nothing.")
    ] = False,
) -> None:
    """Enqueue every catalogue image without a result for the model version (resumable)."""
    from jewelcut.registry import UnknownModelVersion
    from producer.backfill import (
        BackfillBusy,
        BackfillOptions,
        BackfillResult,
        catalogue_size,
        run_backfill,
    )

    settings = _settings(broker=not dry_run)
    since = since.replace(tzinfo=UTC) if since and since.tzinfo is None else since
    options = BackfillOptions(model_version, limit, since, dry_run)

    def on_start(started: BackfillResult) -> None:
        bar.set_total(catalogue_size(settings, after=started.cursor, since=since))

    try:
        with progress_bar("backfill" + (" (dry run)" if dry_run else ""), None) as bar:
            result = run_backfill(
                settings,
                options,
                queue=chunk_queue(settings),
                on_start=on_start,
                on_progress=bar.advance,
            )
    except BackfillBusy as busy:
        console.print(f"[yellow]{busy}[/yellow]")
        raise typer.Exit(1) from busy
    except (UnknownModelVersion, FileNotFoundError) as unknown:  # no such (or no shipped) model
        console.print(f"[red]{unknown}[/red]")
        raise typer.Exit(2) from unknown
    if result.resumed_from:
        console.print(f"resumed a crashed run after image {result.resumed_from}")
    verb = "would enqueue" if result.dry_run else "enqueued"
    console.print(
        f"model version {result.model_version}: {verb} {result.enqueued} images in "
        f"{result.chunks} chunks, skipped {result.skipped}, scanned {result.scanned} "
        f"in {result.seconds:.1f}s ({_rate(result.ids_per_s)} IDs/s"
        f"{f', waited {result.waited_s:.0f}s for the queue' if result.waited_s else ''})"
        + (f"; run {result.run_id}" if result.run_id else "")
    )


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.2f}"


# --- reaper ----------------------------------------------------------------------------------


def reap() -> None:
    """Re-enqueue rows stuck in queued/processing; give up after max_attempts."""
    from producer.reaper import reap as reap_once

    settings = _settings(broker=True)
    result = reap_once(settings, chunk_queue(settings))
    console.print(
        f"re-enqueued {result.requeued} images in {result.chunks} chunks; "
        f"{result.failed} ended failed (too_many_attempts)"
    )


# --- report ----------------------------------------------------------------------------------


def report(
    model_version: Annotated[
        str | None, typer.Option(help="Only this model version; default all.")
    ] = None,
    days: Annotated[int, typer.Option(help="Days shown in the per-day table.")] = 14,
) -> None:
    """Accept rate overall and per day, rejections and failures by reason, confidences."""
    from producer.report import build_report, render_report

    render_report(build_report(_settings(), model_version, days), console)


# --- demo ------------------------------------------------------------------------------------


def demo(
    images: Annotated[int, typer.Option(help="Synthetic listing photos to make.")] = 48,
    out: Annotated[
        Path, typer.Option(help="The demo's own embedded home (SQLite, storage, sheet).")
    ] = Path("jewelcut-data/demo"),
    seed: Annotated[int | None, typer.Option(help="Catalogue seed; default the demo's.")] = None,
) -> None:
    """The main job on the embedded default: synthetic catalogue -> backfill -> report + sheet."""
    from producer.demo import DEMO_SEED, run_demo

    run_demo(
        _settings(database=False),  # the demo has a database of its own
        images=images,
        home=out,
        seed=DEMO_SEED if seed is None else seed,
        console=console,
    )
