"""`jewelcut demo`: the main job, end to end, on the embedded default (no services).

A small synthetic catalogue of listing photos (training.synth, with the demo's own seed, never
one of training's) is written to the demo's storage folder, registered by the catalogue import,
backfilled through the real task code (embedded mode runs each chunk in-process) with the active
model, then the report is printed and the review sheet written. One photo is a truncated upload,
as real catalogues have, to show a recorded failure beside the decisions.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console

from jewelcut.settings import Settings
from producer.progress import progress_bar

DEMO_SEED = 5150  # training uses 0, 1, 2 and 20261126
CATALOGUE_PREFIX = "catalogue"
PHOTOS_MANIFEST = "demo-photos.json"  # what was drawn: a second run with the same ones reuses them
PHOTO_SIZES = ((480, 360), (400, 400), (360, 480), (560, 420))  # width, height


@dataclass
class DemoResult:
    images: int
    seconds: dict[str, float] = field(default_factory=dict)
    sheet: Path | None = None


def demo_settings(settings: Settings, home: Path) -> Settings:
    """The user's settings (model, device, backend) in an embedded home of the demo's own."""
    return settings.model_copy(
        update={
            "data_dir": home.resolve(),
            "database_url": None,
            "broker_url": None,
            "s3_bucket": None,
            "s3_endpoint_url": None,
            "source_root": None,
            "chunk_size": min(settings.chunk_size, 8),  # the progress bar moves per chunk
        }
    )


def run_demo(
    settings: Settings, images: int, home: Path, seed: int, console: Console
) -> DemoResult:
    from jewelcut.migrate import upgrade

    settings = demo_settings(settings, home)
    result = DemoResult(images)
    clock = time.perf_counter()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the demo's output is its report
    upgrade(settings.resolved_database_url)
    folder = settings.storage_root / CATALOGUE_PREFIX
    reused = reuse_catalogue_photos(folder, images, seed, home / PHOTOS_MANIFEST)
    if not reused:
        write_catalogue_photos(folder, images, seed)
        write_manifest(folder, images, seed, home / PHOTOS_MANIFEST)
    result.seconds["photos"] = _lap(clock)
    console.print(
        f"catalogue: {images} photos in {folder}" + (" (drawn before: reused)" if reused else "")
    )

    clock = time.perf_counter()
    _import(settings, folder, console)
    result.seconds["import"] = _lap(clock)

    clock = time.perf_counter()
    _backfill(settings, images, console)
    result.seconds["backfill"] = _lap(clock)

    _report(settings, console)
    clock = time.perf_counter()
    result.sheet = _sheet(settings, home)
    result.seconds["sheet"] = _lap(clock)
    console.print(f"review sheet: {result.sheet}")
    console.print(
        "timings: "
        + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in result.seconds.items())
    )
    return result


def _lap(started: float) -> float:
    return time.perf_counter() - started


def write_catalogue_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` JPEG listing photos (demo-000000.jpg, ...), one of them truncated."""
    from training.synth import listing_photo

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    with progress_bar("drawing listing photos", count) as bar:
        for index in range(count):
            width, height = PHOTO_SIZES[index % len(PHOTO_SIZES)]
            rgb, _mask = listing_photo(rng, width, height)
            ok, encoded = cv2.imencode(
                ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            data = encoded.tobytes()
            if index == count - 1 and count > 1:
                data = data[: len(data) // 3]  # a truncated upload
            path = folder / f"demo-{index:06d}.jpg"
            path.write_bytes(data)
            paths.append(path)
            bar.advance(1)
    return paths


def _manifest(folder: Path, count: int, seed: int) -> dict[str, object]:
    sizes = {path.name: path.stat().st_size for path in sorted(folder.glob("demo-*.jpg"))}
    return {"seed": seed, "count": count, "sizes": sizes}


def write_manifest(folder: Path, count: int, seed: int, manifest: Path) -> None:
    manifest.write_text(json.dumps(_manifest(folder, count, seed), indent=1) + "\n")


def reuse_catalogue_photos(folder: Path, count: int, seed: int, manifest: Path) -> bool:
    """True when the photos this seed and count draw are all there, as drawn (by name and size):
    drawing them again would make the same files."""
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())
    except ValueError:
        return False
    return recorded == _manifest(folder, count, seed) and len(recorded["sizes"]) == count


def _import(settings: Settings, folder: Path, console: Console) -> None:
    from jewelcut.storage import LocalStorage
    from producer.catalogue import ImportSummary, import_rows, rows_from_listing

    summary = ImportSummary()
    rows = rows_from_listing(LocalStorage(folder), "", summary.add_invalid)
    import_rows(settings, rows, summary)
    console.print(
        f"registered: {summary.inserted} new, {summary.updated} updated, "
        f"{summary.unchanged} unchanged, {summary.invalid} invalid"
    )


def _backfill(settings: Settings, images: int, console: Console) -> None:
    from producer.backfill import run_backfill
    from producer.queueing import chunk_queue

    with progress_bar("backfill (segmenting in-process)", images) as bar:
        backfilled = run_backfill(settings, queue=chunk_queue(settings), on_progress=bar.advance)
    console.print(
        f"backfill: {backfilled.enqueued} images in {backfilled.chunks} chunks "
        f"for model version {backfilled.model_version}, {backfilled.seconds:.1f}s "
        f"({backfilled.enqueued / max(backfilled.seconds, 1e-9):.2f} images/s)"
    )


def _report(settings: Settings, console: Console) -> None:
    from producer.report import build_report, render_report

    render_report(build_report(settings), console)


def _sheet(settings: Settings, home: Path) -> Path:
    from worker.sheet import write_sheet_from_database

    return write_sheet_from_database(settings, home / "review-sheet")
