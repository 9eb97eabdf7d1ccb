"""One prepared check for a GPU machine: is the GPU path right, and how fast is it?

    python scripts/gpu_check.py                          # CUDA: batches 1..64, under 5 minutes
    python scripts/gpu_check.py --compile reduce-overhead  # also torch.compile + CUDA graphs
    python scripts/gpu_check.py --device cpu --max-batch 2 --seconds 2 --e2e-images 8
                                                         # proves it runs here

1. Correctness: the torch backend on --device (bf16/fp16 autocast, channels_last on CUDA, the
   flips as one batch) against the CPU ONNX Runtime backend on the same checkpoint and photos:
   max and mean abs difference of probabilities, and whether the gate's decisions agree.
2. Speed: model-only images/s (and peak GPU memory) for batch sizes 1, 2, 4, ... --max-batch,
   and the batch size the backend picks by itself.
3. End to end: process_stream over --e2e-images in-memory listing JPEGs of --photo-size
   (1280x960), written by the worker's own writer (cutout PNG + preview JPEG, kept in memory),
   once with the CPU stages in threads of this process (as before issue 19) and once in
   CPU-stage processes (worker.cpu_pool, --cpu-workers, default the cores available): images/s,
   the ratio to model-only at the picked batch size, CPU ms per image (this process and its
   CPU-stage processes), median ms per stage, and the GPU's busy share (time inside the
   network call over wall time; and NVML's utilisation when pynvml is there). On an H200
   (2026-11-27), before: 25 images/s against 527 model-only.
4. With --compile MODE: the network through torch.compile (JEWELCUT_TORCH_COMPILE) at the picked
   batch size, its compile time and images/s beside eager's; the end-to-end runs then use it.
5. Through a real `jewelcut worker` (scripts/worker_check.py, --worker-images, last): the photos
   as S3 sources and catalogue rows in Postgres, enqueued on Redis in chunks, one worker process
   on --device claiming, segmenting, uploading and recording them: images/s from the enqueue to
   the last recorded image, and NVML's utilisation. Redis and Postgres must run (--redis-url,
   --database-url); without --s3-endpoint moto's S3 server is started.
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
from typing import Any, get_args

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker_check import add_service_options

from jewelcut.settings import TorchCompileMode


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
    under_test = torch_segmenter(model_dir, args, compile_mode="off")
    photos = make_photos(max(args.photos, args.distinct_photos), args.photo_size)
    report["agreement"] = agreement(reference, under_test, photos[: args.photos], args.tolerance)
    report["throughput"] = throughput(under_test, args)
    model_only = {row["batch"]: row["images_per_s"] for row in report["throughput"]["rows"]}
    if args.compile != "off":
        compiled = torch_segmenter(model_dir, args, batch_size=under_test.batch_size)
        report["compiled"] = compiled_throughput(compiled, args)
        model_only[under_test.batch_size] = report["compiled"]["images_per_s"]
    report["end_to_end"] = []
    for cpu_workers in (0, args.cpu_workers) if args.e2e_images > 0 else ():
        segmenter = torch_segmenter(model_dir, args, cpu_workers=cpu_workers)
        run = end_to_end(segmenter, photos, args, model_only.get(segmenter.batch_size))
        report["end_to_end"].append(run)
        segmenter.close()
    write_report(report, args.json)
    if args.worker_images > 0:  # last: it needs services the rest does not
        from worker_check import run_worker_check

        report["worker"] = run_worker_check(args, model_dir, photos, args.worker_images)
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
    parser.add_argument("--e2e-images", type=int, default=1000, help="0 skips end to end")
    parser.add_argument("--distinct-photos", type=int, default=32, help="cycled end to end")
    parser.add_argument(
        "--cpu-workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="CPU-stage processes for the second end-to-end run (default: the cores available)",
    )
    parser.add_argument("--photo-size", default="1280x960")
    parser.add_argument("--io-threads", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max abs probability difference allowed (default 0.1 under bf16/fp16, 1e-4 fp32)",
    )
    parser.add_argument(
        "--compile",
        default="off",
        choices=get_args(TorchCompileMode),
        help="also time the network through torch.compile in this mode; end to end uses it",
    )
    parser.add_argument(
        "--worker-images",
        type=int,
        default=1000,
        help="through a real `jewelcut worker` over Redis, Postgres and S3 "
        "(scripts/worker_check.py); 0 skips it",
    )
    add_service_options(parser)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args()


def model_for_check(work: Path, input_size: int) -> Path:
    """The shipped default; a random-init Unet when none is shipped (fine for plumbing)."""
    from jewelcut.modelcard import default_model_dir
    from jewelcut.settings import DEFAULT_MODELS_DIR
    from worker.model import save_random_init

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
    """Listing JPEGs (quality 90), generated on all cores."""
    from concurrent.futures import ProcessPoolExecutor

    width, height = (int(v) for v in photo_size.split("x"))
    with ProcessPoolExecutor(min(count, os.cpu_count() or 1)) as pool:
        return list(pool.map(_listing_jpeg, range(count), [width] * count, [height] * count))


def _listing_jpeg(seed: int, width: int, height: int) -> bytes:
    import cv2

    rng = np.random.default_rng(99 + seed)
    try:
        from training.synth import listing_photo

        rgb, _ = listing_photo(rng, width, height)
    except ImportError:
        rgb = rng.integers(0, 255, (height, width, 3), np.uint8)
    return cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


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


def network_batch(segmenter: Any, args: argparse.Namespace, batch_size: int) -> np.ndarray:
    """Random pixels in the padded network shape of a --photo-size photo."""
    from worker.preprocess import network_size, padded

    width, height = (int(v) for v in args.photo_size.split("x"))
    net_h, net_w = network_size(height, width, segmenter.card.input_size)
    shape = (batch_size, 3, padded(net_h), padded(net_w))
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def timed_rate(segmenter: Any, batch: np.ndarray, seconds: float) -> float:
    """Images/s of the backend on `batch`, called again and again for `seconds`."""
    images, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        segmenter.backend.predict(batch)  # returns numpy: synchronised
        images += len(batch)
    return images / (time.perf_counter() - started)


def throughput(segmenter: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = args.device == "cuda"
    rows = []
    shape = network_batch(segmenter, args, 1).shape
    print(f"\nmodel-only, input padded to {shape[3]}x{shape[2]}")
    print("batch  images/s  peak GiB")
    batch_size = 1
    while batch_size <= args.max_batch:
        batch = network_batch(segmenter, args, batch_size)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        segmenter.backend.predict(batch)  # warm-up (cuDNN autotuning, allocator)
        rate = timed_rate(segmenter, batch, args.seconds)
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
        rows.append({"batch": batch_size, "images_per_s": rate, "peak_gib": peak})
        print(f"{batch_size:5d}  {rate:8.1f}  {peak:8.2f}")
        batch_size *= 2
    picked = segmenter.batch_size
    print(f"batch size the backend picks by itself: {picked}")
    return {"rows": rows, "picked_batch_size": picked}


def torch_segmenter(model_dir: Path, args: argparse.Namespace, **options: Any) -> Any:
    """The torch backend on --device, compiled as --compile says unless `options` say else."""
    from worker.pipeline import Segmenter

    options = {"compile_mode": args.compile, **options}
    return Segmenter(model_dir, device=args.device, backend="torch", **options)


def compiled_throughput(segmenter: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Model-only images/s of the network through torch.compile at the segmenter's batch size,
    with the time its first call took (the compile, once per input shape)."""
    batch_size = segmenter.batch_size
    batch = network_batch(segmenter, args, batch_size)
    started = time.perf_counter()
    segmenter.backend.predict(batch)
    compile_s = time.perf_counter() - started
    segmenter.backend.predict(batch)  # CUDA graphs record on a later call
    rate = timed_rate(segmenter, batch, args.seconds)
    print(
        f"\ncompiled ({args.compile}), batch {batch_size}: {rate:.1f} images/s "
        f"(first call, the compile: {compile_s:.0f} s)"
    )
    return {"mode": args.compile, "batch": batch_size, "images_per_s": rate, "compile_s": compile_s}


def end_to_end(
    segmenter: Any, photos: list[bytes], args: argparse.Namespace, model_only: float | None
) -> dict[str, Any]:
    from functools import partial

    from worker.chunk import render_artifacts, store_artifacts
    from worker.pipeline import Writer, process_stream

    keys = [str(index) for index in range(args.e2e_images)]
    stored = MemoryStorage()
    write = Writer(render_artifacts, partial(store_artifacts, stored, "gpu-check"))

    def read(key: str) -> bytes:
        return photos[int(key) % len(photos)]

    segmenter.load()
    list(process_stream(segmenter, keys[: segmenter.batch_size], read, write, 4))  # warm-up
    utilisation = GpuUtilisation(args.device)
    cpu_before, started = tree_cpu_seconds(), time.perf_counter()
    with utilisation:
        outcomes = list(process_stream(segmenter, keys, read, write, args.io_threads))
    seconds = time.perf_counter() - started
    cpu_ms = 1000 * (tree_cpu_seconds() - cpu_before) / len(outcomes)
    done = sum(outcome.status == "done" for outcome in outcomes)
    rate = len(outcomes) / seconds
    # "infer" is each image's share of its batch's network call: their sum is the busy time.
    busy = sum(o.timings.get("infer", 0.0) for o in outcomes) / seconds
    stages = {
        stage: 1000 * float(np.median([o.timings[stage] for o in outcomes if stage in o.timings]))
        for stage in ("read", "decode", "preprocess", "infer", "cleanup", "write")
    }
    where = f"{segmenter.cpu_workers} CPU-stage processes" if segmenter.cpu_workers else "threads"
    ratio = rate / model_only if model_only else None
    print(
        f"\nend to end, CPU stages in {where}: {rate:.1f} images/s"
        + (f" ({ratio:.2f}x model-only at batch {segmenter.batch_size})" if ratio else "")
        + f", {done}/{len(outcomes)} done, accepted "
        f"{sum(o.decision == 'accepted' for o in outcomes)}; {cpu_ms:.1f} CPU ms per image; "
        f"network busy {100 * busy:.0f}% of the time"
        + (f" (NVML {utilisation.mean:.0f}%)" if utilisation.mean is not None else "")
        + "; median ms per image: "
        + ", ".join(f"{stage} {value:.1f}" for stage, value in stages.items())
    )
    return {
        "images": len(outcomes),
        "done": done,
        "cpu_workers": segmenter.cpu_workers,
        "images_per_s": rate,
        "ratio_to_model_only": ratio,
        "batch_size": segmenter.batch_size,
        "cpu_ms_per_image": cpu_ms,
        "network_busy_share": busy,
        "nvml_utilisation_percent": utilisation.mean,
        "io_threads": args.io_threads,
        "median_stage_ms": stages,
    }


class MemoryStorage:
    """Uploads counted, not kept."""

    def __init__(self) -> None:
        self.bytes = 0

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.bytes += len(data)
        return f"memory://{key}"


class GpuUtilisation:
    """NVML's GPU utilisation sampled every 0.1 s while the block runs (None without it)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.samples: list[float] = []
        self.mean: float | None = None

    def __enter__(self) -> GpuUtilisation:
        import threading

        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        if self.device == "cuda":
            self.thread.start()
        return self

    def _sample(self) -> None:
        import torch

        while not self.stop.wait(0.1):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no pynvml: the busy share above is the figure
                return

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self.mean = float(np.mean(self.samples)) if self.samples else None


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (the CPU stages)."""
    ticks = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == me or int(fields[1]) == me:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def write_report(report: dict[str, Any], path: Path | None) -> None:
    if path is None and os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_check.json"
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nfigures written to {path}")


if __name__ == "__main__":
    main()
