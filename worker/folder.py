"""`jewelcut segment`: photos in folders -> cutouts, masks and results.jsonl, embedded, no services.

Output layout (OUT):
    <name>.png            the cutout (RGBA) for accepted photos; every decoded one with --all
    masks/<name>.png      the cleaned mask, 0/255, the photo's size, for every decoded photo
    probs/<name>.png      the raw probability at network resolution (0..255), for the sheet
    results.jsonl         one record per input, in completion order
<name> is the photo's stem, or its path below the input folder when two stems collide.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jewelcut.errors import ImageFailure
from worker.cutout import binary_mask, encode_cutout_png, encode_png, encode_probability_png
from worker.pipeline import ImageOutcome, Photo, Prediction, Segmenter, Writer, process_stream

RESULTS_FILE = "results.jsonl"
MASKS_DIR = "masks"
PROBS_DIR = "probs"
# Taken from folders; the unsupported ones are taken too, so that they get a recorded reason.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp"}
    | {".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".svg", ".pdf"}
)
RECORD_FIELDS = (
    "image",
    "status",
    "decision",
    "reason",
    "confidence",
    "fg_score",
    "bg_score",
    "mask_area",
    "width",
    "height",
    "error",
)


@dataclass(frozen=True)
class FolderInput:
    path: Path
    name: str  # output stem, unique within the run


@dataclass
class SegmentSummary:
    total: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, its error)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0

    def add(self, outcome: ImageOutcome) -> None:
        self.total += 1
        if outcome.status == "failed":
            self.failed[outcome.reason or "unknown"] += 1
            self.failures.append((outcome.key, outcome.error or outcome.reason or "unknown"))
        elif outcome.decision == "accepted":
            self.accepted += 1
        else:
            self.rejected[outcome.reason or "unknown"] += 1


def collect_inputs(inputs: Sequence[Path], exclude: Path | None = None) -> list[FolderInput]:
    """Files as given, folders searched recursively for images; raises FileNotFoundError."""
    found: list[tuple[Path, Path]] = []  # (file, the folder it was found under, or its parent)
    excluded = exclude.resolve() if exclude else None
    for given in inputs:
        if given.is_file():
            found.append((given, given.parent))
        elif given.is_dir():
            found.extend((path, given) for path in _images_below(given, excluded))
        else:
            raise FileNotFoundError(f"no such file or folder: {given}")
    unique = list(dict.fromkeys(found))
    return [FolderInput(path, name) for (path, _), name in zip(unique, _names(unique), strict=True)]


def _images_below(folder: Path, excluded: Path | None) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if excluded and path.resolve().is_relative_to(excluded):
            continue
        yield path


def _names(found: Sequence[tuple[Path, Path]]) -> list[str]:
    stems = Counter(path.stem for path, _ in found)
    names = []
    for path, root in found:
        if stems[path.stem] == 1:
            names.append(path.stem)
        else:  # "rings/a.jpg" -> "rings_a_jpg": readable and unique
            names.append(re.sub(r"[^A-Za-z0-9-]+", "_", str(path.relative_to(root))))
    return names


@dataclass(frozen=True)
class FolderRenderer:
    """Encodes one photo's files: mask, probability and (when due) cutout. Picklable: runs in
    a CPU-stage process when there is a pool."""

    write_all: bool = False
    crop: bool = False

    def __call__(self, photo: Photo, prediction: Prediction) -> dict[str, bytes]:
        alpha = prediction.alpha(photo.height, photo.width)
        rendered = {
            MASKS_DIR: encode_png(binary_mask(alpha)),
            PROBS_DIR: encode_probability_png(prediction.probability),
        }
        if prediction.accepted or self.write_all:
            rendered["cutout"] = encode_cutout_png(photo.rgb, alpha, crop=self.crop)
        return rendered


class FolderStore:
    """Writes what FolderRenderer made: OUT/masks/<name>.png, OUT/probs/<name>.png and
    OUT/<name>.png."""

    def __init__(self, out_dir: Path, names: dict[str, str]) -> None:
        self.out_dir = out_dir
        self.names = names
        for sub in (MASKS_DIR, PROBS_DIR):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)

    def __call__(self, key: str, rendered: dict[str, bytes]) -> dict[str, str]:
        name = self.names[key]
        artifacts = {
            "mask": _write(self.out_dir / MASKS_DIR / f"{name}.png", rendered[MASKS_DIR]),
            "probability": _write(self.out_dir / PROBS_DIR / f"{name}.png", rendered[PROBS_DIR]),
        }
        if "cutout" in rendered:
            artifacts["cutout"] = _write(self.out_dir / f"{name}.png", rendered["cutout"])
        return artifacts


def folder_writer(
    out_dir: Path, names: dict[str, str], write_all: bool = False, crop: bool = False
) -> Writer:
    """The pipeline's `write` for a folder run."""
    return Writer(FolderRenderer(write_all, crop), FolderStore(out_dir, names))


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return (
        path.name
        if path.parent.name not in (MASKS_DIR, PROBS_DIR)
        else f"{path.parent.name}/{path.name}"
    )


def read_file(key: str) -> bytes:
    try:
        return Path(key).read_bytes()
    except OSError as error:
        raise ImageFailure(
            "fetch_error", f"cannot read {key}: {error.strerror or error}"
        ) from error


def result_record(item: FolderInput, outcome: ImageOutcome) -> dict[str, Any]:
    record = {name: getattr(outcome, name) for name in RECORD_FIELDS if name != "image"}
    return {
        "image": str(item.path),
        **record,
        "name": item.name,
        **outcome.artifacts,
        "timings": {stage: round(seconds, 5) for stage, seconds in outcome.timings.items()},
    }


def segment_folder(
    segmenter: Segmenter,
    items: Sequence[FolderInput],
    out_dir: Path,
    *,
    write_all: bool = False,
    crop: bool = False,
    io_threads: int = 8,
    on_outcome: Callable[[ImageOutcome], None] | None = None,
) -> SegmentSummary:
    """Segment every input into out_dir; the model must be loaded (segmenter.load())."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_key = {str(item.path): item for item in items}
    writer = folder_writer(
        out_dir, {key: item.name for key, item in by_key.items()}, write_all, crop
    )
    summary = SegmentSummary()
    started = time.perf_counter()
    with (out_dir / RESULTS_FILE).open("w") as results:
        for outcome in process_stream(segmenter, list(by_key), read_file, writer, io_threads):
            results.write(json.dumps(result_record(by_key[outcome.key], outcome)) + "\n")
            summary.add(outcome)
            if on_outcome:
                on_outcome(outcome)
    summary.seconds = time.perf_counter() - started
    return summary


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    with (run_dir / RESULTS_FILE).open() as results:
        return [json.loads(line) for line in results if line.strip()]
