"""Where a model's IoU is lost on a dataset: at the outline or away from it, and whether the
probability threshold is biased. Per image, the error pixels (predicted != truth, plain mask at
0.5) are split by their distance to the true outline (1 px, 2-3 px, farther); the means say
whether a better outline or a better idea of what is jewellery would pay.

    python scripts/error_anatomy.py runs/real-v19/checkpoints/best.pt runs/data/real_devval \
        [--input-size 640] [--flips horizontal] [--limit 150]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from jewelcut.modelcard import Flips
from training.checkpoint import load_any
from training.dataset import read_manifest, read_sample
from training.evaluate import iou, probabilities_of
from worker.model import for_inference
from worker.preprocess import Preprocessor, crop_to_image

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
DISTANCE_BINS = ((0, 1), (1, 3), (3, math.inf))  # (after, up to] px from the true outline


def bin_name(low: float, high: float) -> str:
    return f"lost ({low:g},{high:g}] px"


FIRST_BIN, LAST_BIN = bin_name(*DISTANCE_BINS[0]), bin_name(*DISTANCE_BINS[-1])


def outline_distance(truth: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel of the other class (1 next to the outline)."""
    values = truth.astype(np.uint8)
    inside = cv2.distanceTransform(values, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - values, cv2.DIST_L2, 3)
    return np.where(truth, inside, outside)


def anatomy(probability: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    predicted = probability >= 0.5
    wrong = predicted != truth
    union = max(int((predicted | truth).sum()), 1)
    distance = outline_distance(truth)
    row = {f"iou@{t}": iou(probability >= t, truth) for t in THRESHOLDS}
    for low, high in DISTANCE_BINS:
        in_bin = wrong & (distance > low) & (distance <= high)
        row[bin_name(low, high)] = float(in_bin.sum()) / union
    row["missed share"] = float((wrong & truth).sum()) / max(int(wrong.sum()), 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--flips", type=Flips, choices=list(Flips))
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    network, card, _ = load_any(args.model, args.input_size, args.flips)
    predict = probabilities_of(for_inference(network, card))
    preprocessor = Preprocessor(card.input_size, card.mean)
    rows, backgrounds = [], []
    for sample in read_manifest(args.data)["samples"][: args.limit]:
        rgb, mask = read_sample(args.data, sample["name"])
        prepared = preprocessor(rgb)
        probability = crop_to_image(predict(prepared.tensor[None])[0], prepared)
        probability = cv2.resize(probability, mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
        if mask.any():
            rows.append(anatomy(probability, mask))
            backgrounds.append(sample.get("background", "?"))
    if not rows:
        sys.exit(f"{args.data}: no image with a piece in it (its masks are all empty)")
    print(f"{args.model} on {args.data} at {card.input_size}, {card.test_time_flips.value} flips:")
    print(f"  {len(rows)} images with a piece; means:")
    for key in rows[0]:
        print(f"  {key:>18}: {np.mean([r[key] for r in rows]):.3f}")
    print("  (lost: error pixels in that distance band / union; 1 - IoU@0.5 is their sum)")
    print("  by background: images, IoU@0.5, lost at 1 px, lost beyond 3 px")
    for background in sorted(set(backgrounds)):
        chosen = [r for r, b in zip(rows, backgrounds, strict=True) if b == background]
        means = [np.mean([r[k] for r in chosen]) for k in ("iou@0.5", FIRST_BIN, LAST_BIN)]
        print(f"  {background:>18}: {len(chosen):3d}  " + "  ".join(f"{m:.3f}" for m in means))


if __name__ == "__main__":
    main()
