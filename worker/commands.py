"""CLI commands of the worker: `segment`, `sheet` and `worker` (registered on the root app by
jewelcut.cli). Heavy imports (torch, the pipeline) happen inside the command bodies."""

from __future__ import annotations

import os
import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from jewelcut.settings import Settings
    from worker.folder import SegmentSummary

console = Console(stderr=True)  # progress and logs
summary_console = Console(soft_wrap=True)  # the summary, on stdout
BACKENDS = ("auto", "torch", "onnx")
DEVICES = ("auto", "cpu", "cuda")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("segment")(segment)
    app.command("sheet")(sheet)
    app.command("worker")(worker)


def segment(
    inputs: Annotated[list[Path], typer.Argument(help="Photos or folders (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    write_all: Annotated[
        bool, typer.Option("--all", help="Write a cutout for rejected photos too.")
    ] = False,
    crop: Annotated[bool, typer.Option(help="Crop cutouts to the object with a margin.")] = False,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per model call (default: settings, by device).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model version folder (default: the shipped one).")
    ] = None,
    backend: Annotated[str | None, typer.Option(help="auto, torch or onnx.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    io_threads: Annotated[int | None, typer.Option(help="Decode/encode/write threads.")] = None,
) -> None:
    """Cut out the jewellery in photos on this machine (embedded; no services needed).

    Exit code 0 when every photo got a decision, 1 when some failed (listed), 2 for usage."""
    from jewelcut.logs import configure_logging
    from jewelcut.modelcard import ChecksumMismatch
    from jewelcut.settings import get_settings
    from worker.folder import collect_inputs, segment_folder
    from worker.pipeline import Segmenter

    settings = get_settings()
    configure_logging(settings)
    for name, value, allowed in (("--backend", backend, BACKENDS), ("--device", device, DEVICES)):
        if value is not None and value not in allowed:
            raise typer.BadParameter(f"takes {', '.join(allowed)}", param_hint=name)
    overrides = {"batch_size": batch_size, "backend": backend, "device": device}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    try:
        items = collect_inputs(inputs, exclude=out)
    except FileNotFoundError as error:
        raise typer.BadParameter(str(error), param_hint="INPUTS") from error
    if not items:
        raise typer.BadParameter("no images found", param_hint="INPUTS")
    try:
        segmenter = Segmenter.from_settings(settings, model)
    except FileNotFoundError as error:
        message = f"{error}; pass a model version folder"
        raise typer.BadParameter(message, param_hint="--model") from error
    with console.status(f"loading model {segmenter.model_version}"):
        try:
            segmenter.load()
        except ChecksumMismatch as error:
            console.print(f"[red]refusing the model:[/] {error}")
            raise typer.Exit(1) from error
    console.print(
        f"model {segmenter.model_version} on {segmenter.backend.name}, "
        f"input {segmenter.card.input_size}px, batch {segmenter.batch_size}"
    )
    with _progress() as progress:
        task = progress.add_task("segmenting", total=len(items))
        summary = segment_folder(
            segmenter,
            items,
            out,
            write_all=write_all,
            crop=crop,
            io_threads=io_threads or settings.io_threads,
            on_outcome=lambda _outcome: progress.advance(task),
        )
    _print_summary(summary, out)
    if summary.failures:
        raise typer.Exit(code=1)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.2f} img/s" if speed else "- img/s", style="progress.data.speed")


def _progress() -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def _print_summary(summary: SegmentSummary, out: Path) -> None:
    def by_reason(counts: dict[str, int]) -> str:
        return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"

    summary_console.print(f"accepted {summary.accepted}/{summary.total}")
    rejected = sum(summary.rejected.values())
    summary_console.print(f"rejected {rejected}: {by_reason(summary.rejected)}")
    summary_console.print(f"failed {sum(summary.failed.values())}: {by_reason(summary.failed)}")
    for image, error in sorted(summary.failures):
        summary_console.print(f"  failed {image}: {error}", markup=False, highlight=False)
    summary_console.print(
        f"{summary.images_per_second:.2f} images/s ({summary.seconds:.1f} s); results in {out}"
    )


def sheet(
    run: Annotated[Path | None, typer.Argument(help="A `jewelcut segment` output folder.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write.")] = None,
    from_db: Annotated[
        bool, typer.Option("--from-db", help="Rows from the database instead of a folder run.")
    ] = False,
    model_version: Annotated[
        str | None, typer.Option(help="With --from-db: the model version (default: active).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 200,
    only: Annotated[
        str | None, typer.Option(help="accepted, rejected or failed rows only.")
    ] = None,
) -> None:
    """Render the review sheet (photo, raw mask, cleaned mask, cutout, what a person sees)."""
    from jewelcut.settings import get_settings
    from worker.sheet import folder_rows, write_sheet, write_sheet_from_database

    if from_db == (run is not None):
        raise typer.BadParameter("give a folder run, or --from-db (not both)")
    if only not in (None, "accepted", "rejected", "failed"):
        raise typer.BadParameter("--only takes accepted, rejected or failed")
    if run is None:
        from jewelcut.services import require_database

        settings = get_settings()
        require_database(settings)
        target = write_sheet_from_database(
            settings, out or Path("sheet.html"), model_version, limit=limit, only=only
        )
        console.print(f"review sheet: {target}")
        return
    target = out or run / "sheet.html"
    written = write_sheet(
        folder_rows(run, limit=limit, only=only), target, f"jewelcut review: {run}"
    )
    console.print(f"{written} rows in {target}")


def worker(
    queues: Annotated[str, typer.Option(help="Queues to consume, in order.")] = "priority,bulk",
    gpu: Annotated[
        int | None, typer.Option(help="GPU index for this process (one worker per GPU).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery's log level.")] = "INFO",
    preload: Annotated[bool, typer.Option(help="Load the active model before consuming.")] = True,
) -> None:
    """Start one worker process (JEWELCUT_CHUNKS_IN_FLIGHT chunks at once). Run one per GPU."""
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
    argv = ["worker", *_pool_options(settings), f"--queues={queues}"]
    argv += [f"--loglevel={loglevel}", "--without-gossip", "--without-mingle", "--task-events"]
    argv += [f"--hostname={hostname}"] if hostname else []
    app.worker_main(argv)


def _pool_options(settings: Settings) -> list[str]:
    """One chunk at a time: the solo pool. More: threads of this one process, sharing its model
    and CPU-stage processes, so that a chunk's claim, reads and last writes run while another's
    batches keep the accelerator busy (no fork after CUDA init either way)."""
    if settings.chunks_in_flight == 1:
        return ["--pool=solo", "--concurrency=1"]
    return ["--pool=threads", f"--concurrency={settings.chunks_in_flight}"]


def _preload_model(settings: Settings) -> None:
    from jewelcut.registry import active_model_version
    from worker.chunk import get_segmenter

    name = active_model_version(settings)
    segmenter = get_segmenter(name, settings)
    console.print(f"model {name} loaded on {segmenter.device} (batch {segmenter.batch_size})")
