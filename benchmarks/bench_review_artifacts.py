"""What storing the review artifacts costs per image: the cleaned mask and the probability map
(worker.chunk.write_artifacts, every decided image) beside the cutout and the preview, on the
demo's listing photos through the shipped model (ONNX Runtime on CPU).

    python benchmarks/bench_review_artifacts.py --images 8

Prints, per artifact, the mean encode time and size; and the ratio held to: the two review
artifacts together cost under a quarter of the cutout + preview encode time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from jewelcut.modelcard import default_model_dir
from producer.demo import DEMO_SEED, write_catalogue_photos
from worker.cutout import (
    encode_cutout_png,
    encode_mask_png,
    encode_preview_jpeg,
    encode_probability_png,
)
from worker.decode import decode_image
from worker.pipeline import Segmenter

HELD_TO = 0.25


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_catalogue_photos(Path(folder), args.images + 1, DEMO_SEED)[:-1]
        photos = [decode_image(p.read_bytes(), max_pixels=10**8, min_side=1) for p in paths]
        segmenter = Segmenter(
            default_model_dir(Path("models")),
            device="cpu",
            backend="onnx",
            cache_dir=Path(folder) / "cache",
        )
        predictions = segmenter.predict(photos)
    times: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}

    def measure(name: str, encode: object) -> None:
        started = time.perf_counter()
        data = encode()  # type: ignore[operator]
        times.setdefault(name, []).append(time.perf_counter() - started)
        sizes.setdefault(name, []).append(len(data))

    for rgb, prediction in zip(photos, predictions, strict=True):
        alpha = prediction.alpha(*rgb.shape[:2])
        measure("mask", lambda p=prediction: encode_mask_png(p.mask))
        measure("probability", lambda p=prediction: encode_probability_png(p.probability))
        measure("cutout", lambda r=rgb, a=alpha: encode_cutout_png(r, a))
        measure("preview", lambda r=rgb, a=alpha: encode_preview_jpeg(r, a))
    print(f"{len(photos)} photos, network input {segmenter.card.input_size}")
    for name in times:
        print(
            f"{name:12s} {1000 * statistics.mean(times[name]):6.2f} ms  "
            f"{statistics.mean(sizes[name]) / 1024:7.1f} KiB"
        )
    review = sum(statistics.mean(times[n]) for n in ("mask", "probability"))
    shown = sum(statistics.mean(times[n]) for n in ("cutout", "preview"))
    ratio = review / shown
    print(f"review artifacts / (cutout + preview) encode time: {ratio:.2f} (held to < {HELD_TO})")
    np.testing.assert_array_less(ratio, HELD_TO)


if __name__ == "__main__":
    main()
