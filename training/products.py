"""`jewelcut train key-products`: folders of product photos on white into trusted cutouts, plus
the photos as they are (a piece on white is itself a listing photo) as datasets split by object.

Writes, under OUT:

- `cutouts/{stem}.png`: RGBA cutouts of the photos whose mask passed every check (a cutout
  folder for `train synth --objects`, which splits it again by the same rule), and
  `cutouts/MANIFEST.tsv` with each one's kind (from the photos' MANIFEST.tsv, if any);
- `as-is/train/`, `as-is/dev/`: the kept photos as they are (longest side `AS_IS_MAX_SIDE`) with
  their masks, in the dataset layout `train fit` and `train evaluate` read; the side is the one
  `split.assign_splits` gives the cutout among `cutouts/` and the `also_split_with` folders, so
  it matches what `train synth --split` will do with those same folders;
- `keying.jsonl`: one record per photo (checks, why it was dropped);
- `kept.png`, `dropped.png`: sheets of keyed samples, photo beside cutout, to look at;
- `NOTICE.md`: the photos' own notice (provenance and licence), copied beside what is made.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.dataset import MANIFEST
from training.synth.backgrounds import list_photos, shrink
from training.synth.compose import cutout_kinds, has_real_alpha, load_cutouts
from training.synth.keying import KeyedProduct, key_product
from training.synth.split import Split, assign_splits

AS_IS_MAX_SIDE = 640
SHEET_TILES = 24


@dataclass
class KeyingSummary:
    photos: int
    kept: int
    dropped: Counter[str]
    unreadable: int
    sides: Counter[str]


def key_folders(
    folders: Sequence[Path],
    cut_by_frame: Sequence[Path],
    out: Path,
    also_split_with: Sequence[Path] = (),
    advance: Callable[[], None] | None = None,
) -> KeyingSummary:
    """Key every photo under `folders` and `cut_by_frame` (pieces there may run off the edge)."""
    (out / "cutouts").mkdir(parents=True, exist_ok=True)
    jobs = [(p, False) for p in list_photos(folders)] + [
        (p, True) for p in list_photos(cut_by_frame)
    ]
    records: list[dict[str, Any]] = []
    kept: dict[Path, tuple[dict[str, Any], KeyedProduct]] = {}
    sheets: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"kept": [], "dropped": []}
    for photo, frame_cut in jobs:
        record, keyed = key_one(photo, frame_cut)
        records.append(record)
        if keyed is not None and not keyed.doubtful:
            cutout = out / "cutouts" / f"{photo.stem}.png"
            cv2.imwrite(str(cutout), cv2.cvtColor(keyed.rgba, cv2.COLOR_RGBA2BGRA))
            kept[cutout] = (record, keyed)
        if keyed is not None:
            sheet = sheets["dropped" if keyed.doubtful else "kept"]
            if len(sheet) < SHEET_TILES:
                sheet.append((keyed.photo, keyed.rgba))
        if advance:
            advance()
    sides = product_sides(list(kept), also_split_with)
    for cutout, side in sides.items():
        kept[cutout][0]["split"] = side.value
    write_kinds(out / "cutouts", {c: Path(record["file"]) for c, (record, _) in kept.items()})
    write_as_is(out / "as-is", {c: (kept[c][1], sides[c]) for c in kept})
    copy_notices([*folders, *cut_by_frame], out)
    (out / "keying.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for name, pairs in sheets.items():
        if pairs:
            cv2.imwrite(str(out / f"{name}.png"), tile_sheet(pairs))
    return KeyingSummary(
        photos=len(jobs),
        kept=len(kept),
        dropped=Counter(reason for r in records for reason in r.get("doubtful", [])),
        unreadable=sum(1 for r in records if r.get("unreadable")),
        sides=Counter(side.value for side in sides.values()),
    )


def copy_notices(folders: Sequence[Path], out: Path) -> None:
    """The photos' NOTICE.md (provenance, licence) travels with what is made from them."""
    for folder in folders:
        for candidate in (Path(folder) / "NOTICE.md", Path(folder).parent / "NOTICE.md"):
            if candidate.exists():
                shutil.copy(candidate, out / "NOTICE.md")
                return


def key_one(photo: Path, frame_cut: bool) -> tuple[dict[str, Any], KeyedProduct | None]:
    image = cv2.imread(str(photo), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return {"file": str(photo), "unreadable": True, "doubtful": ["unreadable"]}, None
    keyed = key_product(image, frame_cut_allowed=frame_cut)
    if not keyed.doubtful and not has_real_alpha(keyed.rgba):
        keyed.doubtful.append("no_clear_alpha")  # synth.load_cutouts would skip it
    record = {
        "file": str(photo),
        "cut_by_frame": frame_cut,
        **keyed.checks,
        "doubtful": keyed.doubtful,
        "kept": not keyed.doubtful,
    }
    return record, keyed


def write_kinds(folder: Path, photos: dict[Path, Path]) -> None:
    """cutouts/MANIFEST.tsv: each cutout's kind, from the photos' own MANIFEST.tsv if any."""
    kinds = cutout_kinds(list(photos.values()))
    lines = ["file\tkind\tphoto"] + [
        f"{cutout.name}\t{kinds[photo]}\t{photo}" for cutout, photo in sorted(photos.items())
    ]
    (folder / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")


def product_sides(cutouts: list[Path], also_split_with: Sequence[Path]) -> dict[Path, Split]:
    """The side of each new cutout, judged among the other real cutout folders too (the files
    of theirs that `train synth` takes, so the sides match what it will give)."""
    sides = assign_splits(cutouts + load_cutouts(also_split_with))
    return {c: sides[c] for c in cutouts}


def write_as_is(out: Path, items: dict[Path, tuple[KeyedProduct, Split]]) -> None:
    """The keyed photos as they are, one dataset folder per side."""
    kinds = cutout_kinds(list(items))
    for side in Split:
        folder = out / side.value
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        samples = []
        for cutout, (keyed, item_side) in sorted(items.items()):
            if item_side is not side:
                continue
            name = cutout.stem
            rgb, mask = photo_on_white(keyed)
            cv2.imwrite(
                str(folder / "images" / f"{name}.jpg"),
                rgb[..., ::-1],
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
            cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask.astype(np.uint8) * 255)
            samples.append(
                {
                    "name": name,
                    "kind": kinds.get(cutout, "cutout"),
                    "source": cutout.name,
                    "background": "white",
                    "coverage": round(float(mask.mean()), 5),
                }
            )
        manifest = {
            "recipe": {"as_is_products": True, "split": side.value},
            "samples": samples,
            "cutout_files": [s["source"] for s in samples],
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def photo_on_white(keyed: KeyedProduct) -> tuple[np.ndarray, np.ndarray]:
    """The photo as keyed (RGB, the original pixels) and its mask, at AS_IS_MAX_SIDE at most."""
    coverage = shrink(keyed.mask.astype(np.float32), AS_IS_MAX_SIDE)
    return shrink(keyed.photo, AS_IS_MAX_SIDE), coverage > 0.5


def tile_sheet(pairs: list[tuple[np.ndarray, np.ndarray]], tile: int = 220) -> np.ndarray:
    """Photo beside its cutout on a checkerboard, six pairs a row (BGR for cv2.imwrite)."""
    tiles = []
    for photo, rgba in pairs:
        alpha = rgba[..., 3:].astype(np.float32) / 255
        y, x = np.mgrid[0 : alpha.shape[0], 0 : alpha.shape[1]]
        board = np.where(((y // 10 + x // 10) % 2)[..., None] == 0, 205, 125).astype(np.float32)
        shown = (rgba[..., :3] * alpha + board * (1 - alpha)).astype(np.uint8)
        pair = np.hstack([photo, shown])
        scale = min(2 * tile / pair.shape[1], tile / pair.shape[0])
        small = cv2.resize(
            pair,
            (int(pair.shape[1] * scale), int(pair.shape[0] * scale)),
            interpolation=cv2.INTER_AREA,
        )
        canvas = np.full((tile, 2 * tile, 3), 60, np.uint8)
        canvas[: small.shape[0], : small.shape[1]] = small
        tiles.append(canvas)
    while len(tiles) % 6:
        tiles.append(np.full((tile, 2 * tile, 3), 60, np.uint8))
    rows = [np.hstack(tiles[i : i + 6]) for i in range(0, len(tiles), 6)]
    return np.vstack(rows)[..., ::-1]
