"""Soak: many small photos through one worker, its memory (RSS) printed as it goes; it must
flatten (no leak, a common complaint about background-removal servers).

    python benchmarks/bench_soak.py                          # 10,000 images
    python benchmarks/bench_soak.py --images 2000 --every 250

The worker is the embedded one, in this process: SQLite, a local folder for sources and
results, and `worker.chunk.run_chunk` called chunk after chunk, the same code a Celery worker
runs for each message (claim, fetch, decode, Unet, cleanup, gate, encode, write, upsert).
`--distinct` photos (160x120 by default) are shared by the catalogue rows (image i reads photo
i % distinct): the run is about the worker's memory over many images, not about drawing them.

The first `--warmup` share of the images loads the model and fills pools and caches; after
that RSS should stay flat. The script fits a line to the later samples and exits 1 when RSS
climbs faster than `--max-growth-mb` per 10,000 images. Without --model it uses the shipped
default, or a randomly initialised Unet at --input-size (memory does not depend on weights).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jewelcut.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment import default_or_random_model, generate_photos

PER_IMAGES = 10_000  # growth is reported per this many images


@dataclass
class Samples:
    images: list[int] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)

    def add(self, images: int, rss_mb: float) -> None:
        self.images.append(images)
        self.rss_mb.append(rss_mb)

    def growth_per(self, per: int, after: int) -> float:
        """MB per `per` images, fitted to the samples taken after `after` images."""
        points = [(i, r) for i, r in zip(self.images, self.rss_mb, strict=True) if i >= after]
        if len(points) < 2:
            return 0.0
        images, rss = np.array(points).T
        return float(np.polyfit(images, rss, 1)[0] * per)


def main() -> int:
    args = parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="bench-soak-"))
    model_dir = args.model or default_or_random_model(work / "models", args.input_size)
    settings = embedded_settings(work, model_dir.parent, args)
    version = catalogue(settings, args, model_dir.name)
    print(
        f"soak: {args.images} images ({args.distinct} distinct {args.photo_size} photos), "
        f"chunks of {args.chunk}, model {model_dir.name}, work {work}"
    )
    samples = run(settings, version, args)
    return verdict(settings, samples, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=200, help="Distinct photo files.")
    parser.add_argument("--photo-size", default="160x120")
    parser.add_argument("--chunk", type=int, default=128, help="Images per chunk.")
    parser.add_argument("--every", type=int, default=500, help="Print RSS every N images.")
    parser.add_argument("--warmup", type=float, default=0.2, help="Share of images ignored.")
    parser.add_argument("--max-growth-mb", type=float, default=50.0, help="Per 10,000 images.")
    parser.add_argument("--model", type=Path, help="A model version folder.")
    parser.add_argument("--input-size", type=int, default=160, help="For the random model.")
    parser.add_argument("--io-threads", type=int, default=4)
    parser.add_argument("--out", type=Path, help="Work folder (default: a temporary one).")
    return parser.parse_args()


def embedded_settings(work: Path, models_dir: Path, args: argparse.Namespace) -> Settings:
    from jewelcut.migrate import upgrade
    from jewelcut.settings import get_settings, reset_settings_cache

    for name in [n for n in os.environ if n.startswith("JEWELCUT_")]:
        del os.environ[name]  # embedded: no database, broker or S3 from the environment
    os.environ |= {
        "JEWELCUT_DATA_DIR": str(work / "data"),
        "JEWELCUT_MODELS_DIR": str(models_dir),
        "JEWELCUT_MODEL_CACHE_DIR": str(work / "model-cache"),
        "JEWELCUT_DEVICE": "cpu",
        "JEWELCUT_IO_THREADS": str(args.io_threads),
        "JEWELCUT_CHUNK_SIZE": str(args.chunk),
        "JEWELCUT_LOG_LEVEL": "WARNING",
    }
    reset_settings_cache()
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    return settings


def catalogue(settings: Settings, args: argparse.Namespace, version: str) -> str:
    """Photo files, an images row per image ID and a queued segmentations row each."""
    from sqlalchemy import insert

    from jewelcut.db import Image, Segmentation, session_scope, utcnow
    from jewelcut.registry import ensure_registered

    folder = generate_photos(settings.storage_root / "sources", args.distinct, args.photo_size)
    photos = sorted(path.as_uri() for path in folder.glob("*.jpg"))
    ensure_registered(version, settings)
    now = utcnow()
    for start in range(0, args.images, 2000):
        numbers = range(start, min(start + 2000, args.images))
        with session_scope(settings.resolved_database_url) as session:
            session.execute(
                insert(Image),
                [{"id": image_id(n), "source_uri": photos[n % len(photos)]} for n in numbers],
            )
            session.execute(
                insert(Segmentation),
                [
                    {
                        "image_id": image_id(n),
                        "model_version": version,
                        "status": "queued",
                        "attempts": 0,
                        "enqueued_at": now,
                    }
                    for n in numbers
                ],
            )
    return version


def image_id(number: int) -> str:
    return f"img-{number:07d}"


def run(settings: Settings, version: str, args: argparse.Namespace) -> Samples:
    from worker.chunk import run_chunk

    samples = Samples()
    done, next_report = 0, 0
    last_time, last_done = time.perf_counter(), 0
    for start in range(0, args.images, args.chunk):
        ids = [image_id(n) for n in range(start, min(start + args.chunk, args.images))]
        summary = run_chunk(ids, version, settings=settings)
        done += summary.done + summary.failed
        if done >= next_report or done == args.images:
            rss, now = rss_mb(), time.perf_counter()
            samples.add(done, rss)
            rate = (done - last_done) / (now - last_time)
            print(f"{done:>7} images  {rate:6.1f} images/s  rss {rss:7.1f} MB", flush=True)
            last_time, last_done, next_report = now, done, done + args.every
    return samples


def rss_mb() -> float:
    """This process's resident set size now (Linux), else its peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verdict(settings: Settings, samples: Samples, args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    from jewelcut.db import Segmentation, session_scope

    with session_scope(settings.resolved_database_url) as session:
        statuses = dict(
            session.execute(
                select(Segmentation.status, func.count()).group_by(Segmentation.status)
            ).all()
        )
    warmup = int(args.images * args.warmup)
    after = [r for i, r in zip(samples.images, samples.rss_mb, strict=True) if i >= warmup]
    growth = samples.growth_per(PER_IMAGES, after=warmup)
    print(f"rows: {statuses}")
    print(
        f"rss after warm-up ({warmup} images): {after[0]:.1f} MB, peak {max(samples.rss_mb):.1f}"
        f" MB, final {samples.rss_mb[-1]:.1f} MB; fitted growth {growth:+.1f} MB per "
        f"{PER_IMAGES:,} images (limit {args.max_growth_mb:.0f})"
    )
    finished = statuses.get("done", 0) + statuses.get("failed", 0)
    flat = growth <= args.max_growth_mb
    print(
        "memory flat" if flat else "memory still growing",
        "|",
        f"{finished}/{args.images} images finished",
    )
    return 0 if flat and finished == args.images else 1


if __name__ == "__main__":
    sys.exit(main())
