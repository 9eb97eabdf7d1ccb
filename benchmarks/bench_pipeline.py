"""The pipeline's CPU capacity with inference taken out of the loop (a few minutes on 2 cores).

    python benchmarks/bench_pipeline.py             # 500 photos: stage costs, 1 and 2 cores
    python benchmarks/bench_pipeline.py --quick     # 100 photos, for a quick look
    python benchmarks/bench_pipeline.py --label before   # keep the figures as the baseline
    python benchmarks/bench_pipeline.py --memory    # peak memory, folder CLI and worker chunks

The network's output is REPLAYED, not computed: each photo's probability map is computed once,
up front, by the real shipped model (ONNX Runtime, the full-size decode path) and cached; the
runs then use a replay backend that looks each batch item up by a fingerprint of its input
tensor. Everything else is the product's code: process_stream with its decode, preprocess,
cleanup, gate, alpha, PNG/JPEG encoding and the worker's write_artifacts (uploads go to an
in-memory store). So the figures are what the CPU side of a worker can feed a GPU.

1. photos: 1280x960 listing JPEGs from training.synth (generated once, cached);
2. core-ms per stage: one image at a time in one thread (CPU time of the thread);
3. capacity: process_stream in a child process pinned to 1 core, then to 2 cores, over the
   photos --passes times (each pass under its own keys: at 250 photos/s one pass of 500 lasts
   2 s, and the stream's ramp-up and tail would weigh in a figure meant as a worker's steady
   rate): images/s (wall clock) and CPU ms per image (the process and its children). The
   machine may be shared: the runs are taken in turn --repeats times and each figure is the
   median run's; the load average is printed beside them, and the CPU times hold anyway.

Targets: >= 100 images/s per core, 2 cores >= 1.8x one core. The last line reads
`pipeline capacity: X images/s per core, 2 cores R x one core`.
Cache: benchmarks/.cache/pipeline (photos, replayed outputs, results per --label).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHOTO_WIDTH, PHOTO_HEIGHT = 1280, 960
TARGET_PER_CORE = 100.0
TARGET_SCALING = 1.8
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache" / "pipeline"
REPLAY_NAME = "replay (precomputed ONNX outputs, no inference)"
# (name, cores the run is pinned to, CPU-stage processes; 0: threads of the one process)
RUNS = (("1", 1, 1), ("2", 2, 2), ("2 cores, threads", 2, 0))


def main() -> None:
    args = parse_args()
    if args.child:
        print(json.dumps(child_run(args)))
        return
    if args.memory:
        memory_runs(args)
        return
    count = 100 if args.quick else args.images
    cache = args.cache_dir
    model_dir = shipped_model_dir()
    print(f"model {model_dir.name}; {count} photos {PHOTO_WIDTH}x{PHOTO_HEIGHT}; cache {cache}")
    photos = cached_photos(cache, count)
    replay_dir = cached_replay(cache, model_dir, photos)
    results: dict[str, Any] = {"images": count, "load_before": load_average()}
    results["stages_core_ms"] = stage_costs(model_dir, replay_dir, photos)
    print_stages(results["stages_core_ms"])
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _cores, _workers in RUNS}
    for _repeat in range(args.repeats):
        for name, cores, cpu_workers in RUNS:
            run = capacity_run(args, count, cores, cpu_workers)
            runs[name].append(run)
            print_run(name, run)
    results["runs"] = {name: median_run(measured) for name, measured in runs.items()}
    results["load_after"] = load_average()
    report(results, cache, args.label)


def print_run(name: str, run: dict[str, Any]) -> None:
    print(
        f"{name:<18} {run['images_per_s']:7.1f} images/s wall, "
        f"{run['cpu_ms_per_image']:6.1f} CPU ms per image "
        f"(main process {run['main_cpu_ms_per_image']:.1f}), accepted {run['accepted']}/"
        f"{run['images']}, replay matched {run['replay_matched']}/{run['photos']} photos "
        f"(load {run['load']})"
    )


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median rate (the lower middle of an even count), with every run's rate."""
    ranked = sorted(runs, key=lambda run: run["images_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "all_images_per_s": [r["images_per_s"] for r in runs]}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="100 photos")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--label", default="latest", help="results are kept under this name")
    parser.add_argument("--io-threads", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3, help="passes over the photos per run")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="capacity runs per configuration, taken in turn (1 core, 2 cores, ...); each "
        "figure is the median run's, so one burst of another tenant's load does not set it",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="instead: peak memory of `jewelcut segment` and of the worker's chunk path "
        "(embedded backfill) on ~100 photos of six sizes, real ONNX inference",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def shipped_model_dir() -> Path:
    from jewelcut.settings import DEFAULT_MODELS_DIR

    try:
        from jewelcut.modelcard import default_model_dir
    except ImportError:  # the code before issue 18 moved the card to the core
        from worker.model import default_model_dir  # type: ignore[no-redef]

    return default_model_dir(DEFAULT_MODELS_DIR)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


# ----------------------------------------------------------------------------- photos ---


def cached_photos(cache: Path, count: int) -> list[bytes]:
    """Listing JPEGs (quality 90) from the synthetic generator, one seed per photo."""
    from training.synth import listing_photo

    folder = cache / f"photos-{PHOTO_WIDTH}x{PHOTO_HEIGHT}"
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for index in range(count):
        path = folder / f"{index:04d}.jpg"
        if not path.exists():
            rgb, _mask = listing_photo(np.random.default_rng(index), PHOTO_WIDTH, PHOTO_HEIGHT)
            _ok, encoded = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
            temporary = path.with_suffix(".tmp")
            temporary.write_bytes(encoded.tobytes())
            temporary.replace(path)
            if index % 50 == 49:
                print(f"  generated {index + 1}/{count} photos")
        photos.append(path.read_bytes())
    return photos


# ----------------------------------------------------------------------------- replay ---


def fingerprint(tensor: np.ndarray) -> np.ndarray:
    """A cheap summary of a network input (3, H, W): one sample per 32x32 cell and channel.
    Robust to the small pixel differences between decode paths, distinct between photos."""
    return np.ascontiguousarray(tensor[:, 16::32, 16::32], np.float32).ravel()


def cached_replay(cache: Path, model_dir: Path, photos: list[bytes]) -> Path:
    """Per photo: the real model's probability (network resolution, float16) and the
    fingerprint of its input, computed once through the full-size decode path."""
    try:
        from jewelcut.modelcard import ModelCard
    except ImportError:  # the code before issue 18 moved the card to the core
        from worker.model import ModelCard  # type: ignore[no-redef]

    from worker import preprocess

    card = ModelCard.read(model_dir)
    # The fingerprints are of the network's input as this code makes it: float32 normalised
    # before the network normalised its own uint8 pixels (preprocess.normalisation). A cache each.
    suffix = "-uint8" if hasattr(preprocess, "normalisation") else ""
    folder = cache / f"replay-{card.name}-{(card.weights_sha256 or 'x')[:12]}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(len(photos)) if not (folder / f"{i:04d}.npz").exists()]
    if not missing:
        return folder
    segmenter = reference_segmenter(model_dir, cache)
    print(f"  computing the real model's output for {len(missing)} photos (once, cached)")
    started = time.perf_counter()
    for start in range(0, len(missing), segmenter.batch_size):
        indices = missing[start : start + segmenter.batch_size]
        prepared = [segmenter.preprocess(segmenter.decode(photos[i])) for i in indices]
        probabilities = segmenter.infer(prepared)
        for index, item, probability in zip(indices, prepared, probabilities, strict=True):
            prediction = segmenter.finish(probability)
            temporary = folder / f"{index:04d}.tmp.npz"
            np.savez(
                temporary,
                probability=probability.astype(np.float16),
                fingerprint=fingerprint(item.tensor),
                padded_shape=np.asarray(item.padded_shape),
                decision=np.asarray(prediction.gate.decision),
            )
            temporary.replace(folder / f"{index:04d}.npz")
        done = start + len(indices)
        if done % 20 < segmenter.batch_size:
            rate = done / (time.perf_counter() - started)
            print(f"  {done}/{len(missing)} outputs, {rate:.2f} images/s")
    return folder


def reference_segmenter(model_dir: Path, cache: Path) -> Any:
    from worker.pipeline import Segmenter

    segmenter = Segmenter(model_dir, device="cpu", backend="onnx", cache_dir=cache / "model")
    segmenter.load()
    return segmenter


@dataclass
class ReplayEntry:
    probability: np.ndarray  # float32 (h, w)
    decision: str


# Of a fingerprint's samples (3 channels x a grid of 32x32 cells), the lookup compares every
# other row and column of cells: a quarter of the work, still distinct between photos.
LOOKUP_CELLS = (slice(None), slice(None, None, 2), slice(None, None, 2))


class ReplayBackend:
    """An InferenceBackend that returns precomputed outputs: the nearest stored fingerprint
    among photos of the same padded shape. NOT a network. Made cheap (outputs held as float32,
    a coarse comparison) because its CPU time counts in the main process's."""

    name = REPLAY_NAME

    def __init__(self, folder: Path, count: int, batch_size: int) -> None:
        self.batch_size = batch_size
        self.entries: dict[tuple[int, int], list[ReplayEntry]] = {}
        prints: dict[tuple[int, int], list[np.ndarray]] = {}
        for index in range(count):
            with np.load(folder / f"{index:04d}.npz") as stored:
                shape = (int(stored["padded_shape"][0]), int(stored["padded_shape"][1]))
                probability = stored["probability"].astype(np.float32)
                entry = ReplayEntry(probability, str(stored["decision"]))
                self.entries.setdefault(shape, []).append(entry)
                prints.setdefault(shape, []).append(self.coarse(stored["fingerprint"], shape))
        self.prints = {shape: np.stack(values) for shape, values in prints.items()}
        self.replayed: list[ReplayEntry] = []

    @staticmethod
    def coarse(print_: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        cells = print_.reshape(3, len(range(16, shape[0], 32)), len(range(16, shape[1], 32)))
        return np.ascontiguousarray(cells[LOOKUP_CELLS]).ravel()

    def lookup(self, tensor: np.ndarray) -> ReplayEntry:
        shape = (int(tensor.shape[1]), int(tensor.shape[2]))
        query = self.coarse(fingerprint(tensor), shape)
        distances = np.square(self.prints[shape] - query).sum(axis=1)
        return self.entries[shape][int(np.argmin(distances))]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = np.zeros((batch.shape[0], batch.shape[2], batch.shape[3]), np.float32)
        for index, tensor in enumerate(batch):
            entry = self.lookup(tensor)
            self.replayed.append(entry)
            height, width = entry.probability.shape
            out[index, :height, :width] = entry.probability
        return out


class MemoryStorage:
    """Uploads counted, not kept."""

    def __init__(self) -> None:
        self.bytes = 0

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        self.bytes += len(data)
        return f"memory://{key}"


def replay_segmenter(model_dir: Path, replay_dir: Path, count: int, cpu_workers: int = 0) -> Any:
    from worker import backends
    from worker.pipeline import Segmenter

    if not hasattr(backends, "cpu_batch_size"):  # the code before issue 19
        segmenter = Segmenter(model_dir, device="cpu", backend="onnx")
        segmenter._backend = ReplayBackend(replay_dir, count, backends.CPU_BATCH_SIZE)
        return segmenter
    segmenter = Segmenter(model_dir, device="cpu", backend="onnx", cpu_workers=cpu_workers)
    segmenter._backend = ReplayBackend(replay_dir, count, backends.cpu_batch_size(segmenter.card))
    return segmenter


# ------------------------------------------------------------------------ stage costs ---


def stage_costs(model_dir: Path, replay_dir: Path, photos: list[bytes]) -> dict[str, float]:
    """Mean CPU ms per photo of each stage, one photo at a time, in this thread."""
    segmenter = replay_segmenter(model_dir, replay_dir, len(photos))
    totals: dict[str, float] = {}

    def timed(stage: str, function: Any, *args: Any) -> Any:
        started = time.thread_time()
        result = function(*args)
        totals[stage] = totals.get(stage, 0.0) + time.thread_time() - started
        return result

    if not hasattr(segmenter, "read_photo"):
        return stage_costs_before(segmenter, photos, timed, totals)
    from worker.cutout import encode_cutout_and_preview, encode_preview_jpeg

    for data in photos:
        photo = timed("decode", segmenter.read_photo, data)
        prepared = timed("preprocess", segmenter.prepare, photo)
        (probability,) = segmenter.infer([prepared])  # replayed: not counted
        prediction = timed("cleanup+gate", segmenter.finish, probability)
        if prediction.accepted:
            timed("full decode", getattr, photo, "rgb")
            alpha = timed("alpha", prediction.alpha, photo.height, photo.width)
            timed("cutout+preview", encode_cutout_and_preview, photo.rgb, alpha)
        else:
            timed("preview jpeg", encode_preview_jpeg, photo.reduced, None)
    return {stage: 1000 * seconds / len(photos) for stage, seconds in totals.items()}


def stage_costs_before(
    segmenter: Any, photos: list[bytes], timed: Any, totals: dict[str, float]
) -> dict[str, float]:
    """The same on the code before issue 19 (full decode of every photo), to re-measure the
    baseline: `git archive ffa5e82` with this script copied in."""
    from worker.cutout import encode_cutout_png, encode_preview_jpeg

    for data in photos:
        rgb = timed("decode", segmenter.decode, data)
        prepared = timed("preprocess", segmenter.preprocess, rgb)
        (probability,) = segmenter.infer([prepared])  # replayed: not counted
        prediction = timed("cleanup+gate", segmenter.finish, probability)
        alpha = None
        if prediction.accepted:
            alpha = timed("alpha", prediction.alpha, *rgb.shape[:2])
            timed("cutout png", encode_cutout_png, rgb, alpha)
        timed("preview jpeg", encode_preview_jpeg, rgb, alpha)
    return {stage: 1000 * seconds / len(photos) for stage, seconds in totals.items()}


def print_stages(stages: dict[str, float]) -> None:
    print("core-ms per photo, averaged over all photos (full decode, alpha and PNG: accepted only)")
    for stage, ms in stages.items():
        print(f"  {stage:<14} {ms:7.2f}")
    print(f"  {'total':<14} {sum(stages.values()):7.2f}")


# --------------------------------------------------------------------------- capacity ---


def capacity_run(
    args: argparse.Namespace, count: int, cores: int, cpu_workers: int
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--cores", str(cores), "--count", str(count)]
    command += ["--cpu-workers", str(cpu_workers)]
    command += ["--cache-dir", str(args.cache_dir), "--io-threads", str(args.io_threads)]
    command += ["--passes", str(args.passes)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        sys.exit(f"capacity run on {cores} cores failed:\n{finished.stdout}\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def child_run(args: argparse.Namespace) -> dict[str, Any]:
    """process_stream with the replay backend, pinned to `cores` cores."""
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, available[: args.cores])

    from worker.pipeline import process_stream

    model_dir = shipped_model_dir()
    photos = cached_photos(args.cache_dir, args.count)
    replay_dir = cached_replay(args.cache_dir, model_dir, photos)
    segmenter = replay_segmenter(model_dir, replay_dir, args.count, args.cpu_workers)
    storage = MemoryStorage()
    keys = [f"{run}-{index}" for run in range(args.passes) for index in range(args.count)]

    def read(key: str) -> bytes:
        return photos[int(key.split("-")[1])]

    write = worker_write(storage)

    # A short warm-up (pools, caches), then the measured run.
    list(process_stream(segmenter, keys[: 2 * args.cores], read, write, args.io_threads))
    backend = segmenter.backend
    backend.replayed.clear()
    cpu_before, started = tree_cpu_seconds(), time.perf_counter()
    main_before = time.process_time()
    outcomes = list(process_stream(segmenter, keys, read, write, args.io_threads))
    seconds = time.perf_counter() - started
    cpu = tree_cpu_seconds() - cpu_before
    main_cpu = time.process_time() - main_before
    by_key = {outcome.key: outcome for outcome in outcomes}
    entries = {id(entry): entry for entry in backend.replayed}
    accepted = sum(o.decision == "accepted" for o in outcomes)
    expected = sum(entry.decision == "accepted" for entry in backend.replayed)
    return {
        "cores": args.cores,
        "images": len(outcomes),
        "photos": args.count,
        "done": sum(o.status == "done" for o in outcomes),
        "accepted": accepted,
        # every photo replayed (once a pass): distinct entries = photos, the same accept count
        "replay_matched": len(entries) if expected == accepted else 0,
        "images_per_s": len(outcomes) / seconds,
        "cpu_ms_per_image": 1000 * cpu / len(outcomes),
        # the process that would feed the accelerator (with CPU-stage processes: I/O and
        # orchestration; in threads: everything)
        "main_cpu_ms_per_image": 1000 * main_cpu / len(outcomes),
        "seconds": seconds,
        "uploaded_mb": storage.bytes / 2**20,
        "load": load_average(),
        "failed": sorted({o.reason or "" for o in by_key.values() if o.status == "failed"}),
        "median_stage_ms": {
            stage: 1000 * float(np.median([o.timings.get(stage, 0.0) for o in outcomes]))
            for stage in ("decode", "preprocess", "cleanup", "write")
        },
    }


def worker_write(storage: MemoryStorage) -> Any:
    """The worker's own write: rendered in the CPU-stage processes, stored here (on the code
    before issue 19: write_artifacts in the I/O threads)."""
    from functools import partial

    try:
        from worker.chunk import render_artifacts, store_artifacts
        from worker.pipeline import Writer
    except ImportError:
        from worker.chunk import write_artifacts

        return partial(write_artifacts, storage, "bench")
    return Writer(render_artifacts, partial(store_artifacts, storage, "bench"))


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (a process pool)."""
    ticks = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == me or ppid == me:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# ----------------------------------------------------------------------------- memory ---

MEMORY_SIZES = ((1204, 1600), (1600, 1204), (1280, 960), (960, 1280), (2000, 1500), (800, 600))
MEMORY_TARGET_GIB = 2.0


def memory_photos(cache: Path, count: int) -> Path:
    """`count` JPEGs of six sizes (phone portrait and landscape, listing, large, small), made
    from the cached listing photos."""
    folder = cache / f"memory-photos-{count}"
    if folder.exists() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(cached_photos(cache, count)):
        width, height = MEMORY_SIZES[index % len(MEMORY_SIZES)]
        rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if (height > width) != (rgb.shape[0] > rgb.shape[1]):
            rgb = cv2.rotate(rgb, cv2.ROTATE_90_CLOCKWISE)
        resized = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"m{index:04d}.jpg"), resized, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def memory_runs(args: argparse.Namespace) -> None:
    import shutil
    import tempfile

    count = 30 if args.quick else 100
    photos = memory_photos(args.cache_dir, count)
    model_dir = shipped_model_dir()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    base = {
        **os.environ,
        "JEWELCUT_MODEL_CACHE_DIR": str(args.cache_dir / "model"),
        "JEWELCUT_DEVICE": "cpu",
        "JEWELCUT_DATA_DIR": str(work / "data"),
        "JEWELCUT_SOURCE_ROOT": str(photos),
    }
    jewelcut = str(Path(sys.executable).with_name("jewelcut"))
    print(f"{count} photos of sizes {', '.join(f'{w}x{h}' for w, h in MEMORY_SIZES)}")
    print(f"load average {load_average()}")
    out = str(work / "out")
    peak = peak_memory(
        [jewelcut, "segment", str(photos), "--out", out, "--model", str(model_dir)], base
    )
    print_memory("jewelcut segment", peak)
    # The worker's chunk path (worker.chunk.run_chunk), in-process in embedded mode.
    subprocess.run([jewelcut, "db", "upgrade"], env=base, check=True, capture_output=True)
    subprocess.run(
        [jewelcut, "catalogue", "import", "--listing", str(photos)],
        env=base,
        check=True,
        capture_output=True,
    )
    peak = peak_memory([jewelcut, "backfill"], base)
    print_memory("worker chunks (embedded backfill)", peak)
    shutil.rmtree(work, ignore_errors=True)


def print_memory(name: str, peak: dict[str, float]) -> None:
    verdict = "under" if peak["pss_gib"] < MEMORY_TARGET_GIB else "OVER"
    print(
        f"{name}: peak {peak['pss_gib']:.2f} GiB proportional set size (process and its "
        f"CPU-stage processes, shared pages counted once), {peak['rss_gib']:.2f} GiB summed "
        f"RSS, main process {peak['main_rss_gib']:.2f} GiB; {verdict} the "
        f"{MEMORY_TARGET_GIB:g} GiB target; {peak['seconds']:.0f} s"
    )


def peak_memory(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a command; sample the memory of it and its children every 0.2 s."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = {"pss_gib": 0.0, "rss_gib": 0.0, "main_rss_gib": 0.0}
    while process.poll() is None:
        sample = tree_memory(process.pid)
        peak = {key: max(peak[key], sample[key]) for key in peak}
        time.sleep(0.2)
    _out, err = process.communicate()
    if process.returncode != 0:
        sys.exit(f"{' '.join(command[:2])} failed:\n{err.decode()[-3000:]}")
    return {**peak, "seconds": time.perf_counter() - started}


def tree_memory(root: int) -> dict[str, float]:
    pids, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        frontier.extend(int(child) for child in children)
        pids.update(int(child) for child in children)
    pss = rss = main = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        values = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
        pss += values.get("Pss", 0)
        rss += values.get("Rss", 0)
        if pid == root:
            main = values.get("Rss", 0)
    return {"pss_gib": pss / 2**20, "rss_gib": rss / 2**20, "main_rss_gib": main / 2**20}


# ----------------------------------------------------------------------------- report ---


def report(results: dict[str, Any], cache: Path, label: str) -> None:
    (cache / f"results-{label}.json").write_text(json.dumps(results, indent=2) + "\n")
    baseline_path = cache / "results-before.json"
    if label != "before" and baseline_path.exists():
        before = json.loads(baseline_path.read_text())
        print("before -> now:")
        for cores in ("1", "2"):
            old, new = before["runs"][cores], results["runs"][cores]
            print(
                f"  {cores} core(s): {old['images_per_s']:.1f} -> {new['images_per_s']:.1f} "
                f"images/s, {old['cpu_ms_per_image']:.1f} -> {new['cpu_ms_per_image']:.1f} "
                "CPU ms per image"
            )
    one, two = results["runs"]["1"], results["runs"]["2"]
    for name in ("1", "2"):
        run = results["runs"][name]
        print(
            f"median ms per stage in the {name}-core run: "
            + ", ".join(f"{stage} {ms:.1f}" for stage, ms in run.get("median_stage_ms", {}).items())
        )
        rates = ", ".join(f"{rate:.1f}" for rate in run["all_images_per_s"])
        print(f"{name}-core runs: {rates} images/s (the figures are the median run's)")
    per_core_cpu = 1000 / one["cpu_ms_per_image"]
    ratio = two["images_per_s"] / one["images_per_s"]
    # Each repeat's 1- and 2-core runs are back to back: their ratio is the least exposed to a
    # shared machine's drift, which moves the medians apart when it comes between repeats.
    paired = [b / a for a, b in zip(one["all_images_per_s"], two["all_images_per_s"], strict=True)]
    print(
        "2 cores x one core, each repeat's back-to-back runs: "
        + ", ".join(f"{r:.2f}" for r in paired)
    )
    print(
        f"per core by CPU time: {per_core_cpu:.1f} images/s per core-second "
        f"(target {TARGET_PER_CORE:g}); load average {results['load_before']} -> "
        f"{results['load_after']}; inference: {REPLAY_NAME}"
    )
    print(
        f"pipeline capacity: {one['images_per_s']:.1f} images/s per core, "
        f"2 cores {ratio:.2f} x one core"
    )


if __name__ == "__main__":
    main()
