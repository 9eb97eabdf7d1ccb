"""Small copies of the train side of the real data, for a GPU machine that takes 64 MiB with the
checkout (scripts/gpu_burst_prepare.sh runs this). Only the train side of the split travels;
names are kept, so the split judged there again gives the same side.

    python -m training.stage DATA KEYED DEVVAL OUT
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from training.dataset import MANIFEST
from training.synth import Backgrounds, load_cutouts
from training.synth.backgrounds import shrink
from training.synth.compose import cutout_kinds, read_cutout
from training.synth.split import Split

PHOTO_SIDE = 320
CUTOUT_SIDE = 320
AS_IS_SIDE = 288
DEVVAL_SIDE = 480
JPEG_QUALITY = 80


def stage_backgrounds(folder: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    photos = Backgrounds([folder], use_skimage=False, split=Split.train).photo_files
    for path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            cv2.imwrite(
                str(out / f"{path.stem}.jpg"),
                shrink(image, PHOTO_SIDE),
                [cv2.IMWRITE_JPEG_QUALITY, 85],
            )
    return len(photos)


def stage_cutouts(folders: list[Path], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    cutouts = load_cutouts(folders, Split.train)
    kinds = cutout_kinds(cutouts)
    rows = ["file\tkind"] + [f"{p.stem}.webp\t{kinds[p]}" for p in cutouts]
    (out / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    for path in cutouts:
        rgba = shrink(read_cutout(path), CUTOUT_SIDE)
        cv2.imwrite(
            str(out / f"{path.stem}.webp"),
            cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA),
            [cv2.IMWRITE_WEBP_QUALITY, 80],
        )
    return len(cutouts)


def stage_dataset(folder: Path, out: Path, side: int) -> int:
    """A dataset folder (images/, masks/, manifest.json), images shrunk to `side` at most."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    shutil.copy(folder / MANIFEST, out / MANIFEST)
    for image_path in sorted((folder / "images").glob("*.jpg")):
        mask_path = folder / "masks" / f"{image_path.stem}.png"
        image = shrink(cv2.imread(str(image_path), cv2.IMREAD_COLOR), side)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        mask = cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(out / "images" / image_path.name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        cv2.imwrite(
            str(out / "masks" / mask_path.name), np.where(mask > 127, 255, 0).astype(np.uint8)
        )
    return len(list((out / "images").glob("*.jpg")))


def main(data: Path, keyed: Path, devval: Path, out: Path) -> None:
    counts = {
        "hands": stage_backgrounds(data / "backgrounds" / "hands", out / "backgrounds" / "hands"),
        "surfaces": stage_backgrounds(
            data / "backgrounds" / "surfaces", out / "backgrounds" / "surfaces"
        ),
        "cutouts": stage_cutouts([data / "objects", keyed / "cutouts"], out / "objects"),
        "as-is": stage_dataset(keyed / "as-is" / "train", out / "as-is-train", AS_IS_SIDE),
        "devval": stage_dataset(devval, out / "devval", DEVVAL_SIDE),
    }
    print("staged (train side only): " + ", ".join(f"{n} {c}" for n, c in counts.items()))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*(Path(a) for a in sys.argv[1:]))
