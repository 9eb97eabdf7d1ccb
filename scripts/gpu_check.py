"""One prepared check for a GPU machine: is the GPU path right, and how fast is it?

    python scripts/gpu_check.py                          # CUDA: batches 1..64, ~3 minutes
    python scripts/gpu_check.py --device cpu --max-batch 2 --seconds 2   # proves it runs here

1. Correctness: the torch backend on --device (bf16/fp16 autocast, channels_last on CUDA)
   against the CPU ONNX Runtime backend on the same checkpoint and photos: max and mean abs
   difference of probabilities, and whether the gate's decisions agree.
2. Speed: model-only images/s (and peak GPU memory) for batch sizes 1, 2, 4, ... --max-batch,
   and the batch size the backend picks by itself.
3. End to end: process_stream over in-memory JPEGs with the picked batch size (images/s and
   median milliseconds per stage), once per --switch-intervals value. On an H200 (2026-11-27)
   it ran 25 images/s against 527 model-only: a test of whether the GIL is what starves the
   inference thread.
Prints a table and writes the figures as JSON to --json (default $OUT/gpu_check.json when the
OUT variable is set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model_dir = args.model or model_for_check(work, args.input_size)
    report: dict[str, Any] = {"device": describe_device(args.device), "model": str(model_dir)}
    print(f"device: {report['device']}\nmodel: {model_dir}")

    from worker.pipeline import Segmenter

    cache_dir = args.cache_dir or work / "cache"
    reference = Segmenter(model_dir, device="cpu", backend="onnx", cache_dir=cache_dir)
    under_test = Segmenter(model_dir, device=args.device, backend="torch")
    photos = make_photos(args.photos, args.photo_size)
    report["agreement"] = agreement(reference, under_test, photos, args.tolerance)
    report["throughput"] = throughput(under_test, args)
    report["end_to_end"] = [
        end_to_end(under_test, photos, args, interval)
        for interval in (args.switch_intervals if args.e2e_images > 0 else [])
    ]
    write_report(report, args.json)
    if not report["agreement"]["ok"]:
        sys.exit("FAILED: the GPU path disagrees with the CPU reference beyond the tolerance")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--model", type=Path, help="model version folder (default: shipped)")
    parser.add_argument("--input-size", type=int, default=320, help="for a random-init model")
    parser.add_argument("--cache-dir", type=Path, help="ONNX export cache (default: temporary)")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0, help="per batch size")
    parser.add_argument("--photos", type=int, default=8, help="photos for the agreement check")
    parser.add_argument("--e2e-images", type=int, default=512, help="0 skips the end-to-end run")
    parser.add_argument(
        "--switch-intervals",
        type=lambda text: [float(value) for value in text.split(",")],
        default=[0.005, 0.0002],
        help="Python's GIL switch interval (s) for each end-to-end run: the inference thread "
        "takes the GIL back after every kernel launch, and the I/O threads may hold it for up "
        "to one interval each time (H200, 2026-11-27: 25 images/s end to end at the default "
        "5 ms against 527 model-only)",
    )
    parser.add_argument("--photo-size", default="800x600")
    parser.add_argument("--io-threads", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max abs probability difference allowed (default 0.1 under bf16/fp16, 1e-4 fp32)",
    )
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def model_for_check(work: Path, input_size: int) -> Path:
    """The shipped default; a random-init Unet when none is shipped (fine for plumbing)."""
    from jewelcut.settings import DEFAULT_MODELS_DIR
    from worker.model import default_model_dir, save_random_init

    try:
        return default_model_dir(DEFAULT_MODELS_DIR)
    except FileNotFoundError:
        print("no shipped model: using a random-init Unet (agreement is then a plumbing check)")
        return save_random_init(work, input_size)


def describe_device(device: str) -> str:
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --device cpu to check the script itself")
        properties = torch.cuda.get_device_properties(0)
        memory = properties.total_memory / 2**30
        return f"{properties.name}, {memory:.0f} GiB, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def make_photos(count: int, photo_size: str) -> list[bytes]:
    import cv2

    width, height = (int(v) for v in photo_size.split("x"))
    rng = np.random.default_rng(99)
    photos = []
    for _ in range(count):
        try:
            from training.synth import listing_photo

            rgb, _ = listing_photo(rng, width, height)
        except ImportError:
            rgb = rng.integers(0, 255, (height, width, 3), np.uint8)
        photos.append(
            cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        )
    return photos


def agreement(
    reference: Any, under_test: Any, photos: list[bytes], tolerance: float | None
) -> dict[str, Any]:
    """The path as it runs (autocast on CUDA), and on CUDA also in fp32 (TF32 allowed): a
    difference there is a kernel or layout bug, not half precision."""
    prepared = [reference.preprocess(reference.decode(photo)) for photo in photos]
    batch = np.stack([item.tensor for item in prepared])
    expected = reference.backend.predict(batch)
    autocast = getattr(under_test.backend, "autocast_dtype", None)
    limit = tolerance if tolerance is not None else (0.1 if autocast is not None else 1e-4)
    result = compare(reference, under_test, prepared, expected, f"autocast {autocast}", limit)
    if autocast is not None:
        under_test.backend.autocast_dtype = None
        try:
            fp32 = compare(reference, under_test, prepared, expected, "fp32/TF32", 1e-2)
        finally:
            under_test.backend.autocast_dtype = autocast
        result = {**result, "fp32": fp32, "ok": result["ok"] and fp32["ok"]}
    return result


def compare(
    reference: Any,
    under_test: Any,
    prepared: list[Any],
    expected: np.ndarray,
    label: str,
    limit: float,
) -> dict[str, Any]:
    actual = under_test.backend.predict(np.stack([item.tensor for item in prepared]))
    difference = np.abs(expected - actual)
    decisions = [
        reference.finish(e[: p.height, : p.width]).gate.decision
        == under_test.finish(a[: p.height, : p.width]).gate.decision
        for e, a, p in zip(expected, actual, prepared, strict=True)
    ]
    result = {
        "backend": under_test.backend.name,
        "precision": label,
        "max_abs_diff": float(difference.max()),
        "p999_abs_diff": float(np.quantile(difference, 0.999)),
        "mean_abs_diff": float(difference.mean()),
        "tolerance": limit,
        "decisions_agree": f"{sum(decisions)}/{len(decisions)}",
        "ok": bool(difference.max() <= limit),
    }
    print(
        f"\nagreement {result['backend']} ({label}) vs onnx-cpu: "
        f"max |dp| {result['max_abs_diff']:.2e}, 99.9% {result['p999_abs_diff']:.2e}, "
        f"mean {result['mean_abs_diff']:.2e}, tolerance {limit:g} -> "
        f"{'OK' if result['ok'] else 'FAIL'}; decisions agree {result['decisions_agree']}"
    )
    return result


def throughput(segmenter: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from worker.preprocess import network_size, padded

    width, height = (int(v) for v in args.photo_size.split("x"))
    net_h, net_w = network_size(height, width, segmenter.card.input_size)
    cuda = args.device == "cuda"
    rows = []
    print(f"\nmodel-only, input {net_w}x{net_h} padded to {padded(net_w)}x{padded(net_h)}")
    print("batch  images/s  peak GiB")
    batch_size = 1
    while batch_size <= args.max_batch:
        batch = np.random.default_rng(0).normal(size=(batch_size, 3, padded(net_h), padded(net_w)))
        batch = batch.astype(np.float32)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        segmenter.backend.predict(batch)  # warm-up (cuDNN autotuning, allocator)
        images, started = 0, time.perf_counter()
        while time.perf_counter() - started < args.seconds:
            segmenter.backend.predict(batch)  # returns numpy: synchronised
            images += batch_size
        rate = images / (time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        rows.append({"batch": batch_size, "images_per_s": rate, "peak_gib": peak})
        print(f"{batch_size:5d}  {rate:8.1f}  {peak:8.2f}")
        batch_size *= 2
    picked = segmenter.batch_size
    print(f"batch size the backend picks by itself: {picked}")
    return {"rows": rows, "picked_batch_size": picked}


def end_to_end(
    segmenter: Any, photos: list[bytes], args: argparse.Namespace, switch_interval: float
) -> dict[str, Any]:
    from worker.cutout import encode_cutout_and_preview, encode_preview_jpeg
    from worker.pipeline import process_stream

    keys = [str(index) for index in range(args.e2e_images)]

    def read(key: str) -> bytes:
        return photos[int(key) % len(photos)]

    def write(key: str, photo: Any, prediction: Any) -> dict[str, str]:
        if not prediction.accepted:
            return {"preview": str(len(encode_preview_jpeg(photo.reduced, None)))}
        alpha = prediction.alpha(photo.height, photo.width)
        cutout, preview = encode_cutout_and_preview(photo.rgb, alpha)
        return {"preview": str(len(preview)), "cutout": str(len(cutout))}

    default_interval = sys.getswitchinterval()
    sys.setswitchinterval(switch_interval)
    try:
        started = time.perf_counter()
        outcomes = list(process_stream(segmenter, keys, read, write, args.io_threads))
        seconds = time.perf_counter() - started
    finally:
        sys.setswitchinterval(default_interval)
    done = sum(outcome.status == "done" for outcome in outcomes)
    rate = len(outcomes) / seconds
    # Per image, in its thread; "infer" is its share of its batch's call.
    stages = {
        stage: float(np.median([o.timings[stage] for o in outcomes if stage in o.timings]))
        for stage in ("read", "decode", "preprocess", "infer", "cleanup", "write")
    }
    print(
        f"\nend to end (decode, Unet, cleanup, gate, PNG+JPEG encode), GIL switch interval "
        f"{1000 * switch_interval:g} ms: {rate:.1f} images/s, "
        f"{done}/{len(outcomes)} done; median ms per image: "
        + ", ".join(f"{stage} {1000 * value:.1f}" for stage, value in stages.items())
    )
    return {
        "images": len(outcomes),
        "done": done,
        "images_per_s": rate,
        "io_threads": args.io_threads,
        "switch_interval_s": switch_interval,
        "median_stage_seconds": stages,
    }


def write_report(report: dict[str, Any], path: Path | None) -> None:
    if path is None and os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_check.json"
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nfigures written to {path}")


if __name__ == "__main__":
    main()
