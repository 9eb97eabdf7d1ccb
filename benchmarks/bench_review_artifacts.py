"""What storing the review artifacts costs per image: the cleaned mask and the probability map
(worker.chunk.write_artifacts, every decided image) beside the cutout and the preview, on the
demo's listing photos through the shipped model (ONNX Runtime on CPU).

    python benchmarks/bench_review_artifacts.py --images 8

Prints, per step, the mean time (and size of what it encodes); and the ratio held to: the two
review artifacts together cost under a quarter of the CPU work the worker already does on a
photo around the network (decode, cleanup, the cutout and preview). Since the cutout's encoding
got about five times faster (issue 19), the cutout alone is no longer the yardstick.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from jewelcut.modelcard import default_model_dir
from jewelcut.settings import get_settings
from producer.demo import DEMO_SEED, write_catalogue_photos
from worker.cleanup import clean_mask
from worker.cutout import encode_cutout_and_preview, encode_mask_png, encode_probability_png
from worker.decode import decode_image
from worker.pipeline import Segmenter

HELD_TO = 0.25


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_catalogue_photos(Path(folder), args.images + 1, DEMO_SEED)[:-1]
        data = [p.read_bytes() for p in paths]
    photos = [decode_image(d, max_pixels=10**8, min_side=1) for d in data]
    segmenter = Segmenter(
        default_model_dir(Path("models")),
        device="cpu",
        backend="onnx",
        cache_dir=get_settings().resolved_model_cache_dir,
    )
    predictions = segmenter.predict(photos)
    times: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}

    def measure(name: str, step: object) -> None:
        started = time.perf_counter()
        result = step()  # type: ignore[operator]
        times.setdefault(name, []).append(time.perf_counter() - started)
        parts = result if isinstance(result, tuple) else (result,)
        encoded = sum(len(part) for part in parts if isinstance(part, bytes))
        sizes.setdefault(name, []).append(encoded)

    for photo, rgb, prediction in zip(data, photos, predictions, strict=True):
        alpha = prediction.alpha(*rgb.shape[:2])
        measure("mask", lambda p=prediction: encode_mask_png(p.mask))
        measure("probability", lambda p=prediction: encode_probability_png(p.probability))
        measure("decode", lambda d=photo: decode_image(d, max_pixels=10**8, min_side=1))
        measure("cleanup", lambda p=prediction: clean_mask(p.probability))
        measure("cutout+preview", lambda r=rgb, a=alpha: encode_cutout_and_preview(r, a))
    print(f"{len(photos)} photos, network input {segmenter.card.input_size}")
    for name in times:
        size = statistics.mean(sizes[name]) / 1024
        print(
            f"{name:15s} {1000 * statistics.mean(times[name]):6.2f} ms"
            + (f"  {size:7.1f} KiB" if size else "")
        )
    review = sum(statistics.mean(times[n]) for n in ("mask", "probability"))
    around = sum(statistics.mean(times[n]) for n in ("decode", "cleanup", "cutout+preview"))
    ratio = review / around
    print(
        f"review artifacts / (decode + cleanup + cutout and preview): {ratio:.2f} "
        f"(held to < {HELD_TO})"
    )
    np.testing.assert_array_less(ratio, HELD_TO)


if __name__ == "__main__":
    main()
