"""How exact a set's outlines must be: the IoU each mask keeps against itself grown by 1 px,
shrunk by 1 px, and passed through half resolution and back. A mean near 0.85 for a 1 px error
means a model needs outlines right to about a pixel to score 0.85 on that set.

    python scripts/mask_outline_sensitivity.py runs/data/real_dev runs/data/heldout
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from training.evaluate import iou

ONE_PIXEL = np.ones((3, 3), np.uint8)


def sensitivities(mask: np.ndarray) -> tuple[float, float, float]:
    """(IoU grown 1 px, shrunk 1 px, through half resolution) of one boolean mask."""
    height, width = mask.shape
    values = mask.astype(np.uint8)
    half = cv2.resize(
        values.astype(np.float32), (width // 2, height // 2), interpolation=cv2.INTER_AREA
    )
    back = cv2.resize(half, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    grown = cv2.dilate(values, ONE_PIXEL) > 0
    shrunk = cv2.erode(values, ONE_PIXEL) > 0
    return iou(mask, grown), iou(mask, shrunk), iou(mask, back)


def report(folder: Path) -> str:
    rows = []
    for path in sorted((folder / "masks").glob("*.png")):
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 127
        if mask.any():
            rows.append(sensitivities(mask))
    if not rows:
        return f"{folder}: no masks with an object under {folder / 'masks'}"
    grown, shrunk, half = np.mean(rows, axis=0)
    return (
        f"{folder}: {len(rows)} masks; IoU kept grown 1 px {grown:.3f}, shrunk 1 px "
        f"{shrunk:.3f}, through half resolution {half:.3f}"
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: mask_outline_sensitivity.py DATASET [DATASET ...]")
    for argument in sys.argv[1:]:
        print(report(Path(argument)))
