"""The accelerator's idle time between chunks: one chunk in flight against two (a few minutes).

    python benchmarks/bench_chunk_overlap.py                    # 6 chunks of 128, 25 ms/image
    python benchmarks/bench_chunk_overlap.py --chunks 3 --chunk-size 64   # a quick look

A real Celery worker (in this process, as the tests start one) consumes chunk messages from Redis,
claims and records rows in Postgres, reads the photos from and writes the cutouts to an S3 server
(moto, a subprocess), with every CPU stage of the product. Only the ACCELERATOR IS SIMULATED:
each batch holds it for `--accelerator-ms` per image (a sleep, no CPU), then returns the real
shipped model's outputs for those photos, computed once and replayed (bench_pipeline's cache). So
the figures show the bubbles the worker leaves between chunks, not a GPU's speed: the claim, the
first reads and decodes, the last writes and records, the ack and the next message.

Per setting of JEWELCUT_CHUNKS_IN_FLIGHT (1: the solo pool; 2: two threads sharing the model,
the default on CUDA): images/s, the accelerator's busy share (time inside batches over the time
from the first batch to the last) and the idle ms per chunk. The last line reads
`accelerator busy: X one chunk in flight, Y two`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backfill import own_database, own_redis_index
from bench_pipeline import (
    DEFAULT_CACHE,
    ReplayBackend,
    cached_photos,
    cached_replay,
    shipped_model_dir,
)

from tests.local_servers import moto_server

PHOTOS = 100  # distinct photos (bench_pipeline's cache); image IDs reuse them in turn


class SimulatedAccelerator:
    """Holds each batch for `seconds_per_image` per image without using a CPU, then returns the
    replayed real outputs; records when it was busy. NOT a network."""

    def __init__(self, replay: ReplayBackend, seconds_per_image: float) -> None:
        self.replay = replay
        self.seconds_per_image = seconds_per_image
        self.name = f"simulated accelerator ({1000 * seconds_per_image:g} ms/image), replayed"
        self.batch_size = 16
        self.busy: list[tuple[float, float]] = []
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        time.sleep(self.seconds_per_image * len(batch))
        out = self.replay.predict(batch)
        with self._lock:
            self.busy.append((started, time.perf_counter()))
        return out


def configure(database_url: str, redis_url: str, s3_url: str, args: argparse.Namespace) -> Any:
    from jewelcut.migrate import upgrade
    from jewelcut.queue import configure_app
    from jewelcut.settings import get_settings, reset_settings_cache

    bucket = f"jewelcut-bench-{uuid.uuid4().hex[:8]}"
    os.environ.update(
        {
            "JEWELCUT_DATABASE_URL": database_url,
            "JEWELCUT_BROKER_URL": redis_url,
            "JEWELCUT_S3_ENDPOINT_URL": s3_url,
            "JEWELCUT_S3_ACCESS_KEY_ID": "testing",
            "JEWELCUT_S3_SECRET_ACCESS_KEY": "testing",
            "JEWELCUT_S3_BUCKET": bucket,
            "JEWELCUT_SOURCE_BUCKETS": f'["{bucket}"]',
            "JEWELCUT_CHUNK_SIZE": str(args.chunk_size),
            "JEWELCUT_CHUNKS_IN_FLIGHT": "2",  # sizes the S3 connection pool for both runs
            "JEWELCUT_DEVICE": "cpu",
            "JEWELCUT_LOG_LEVEL": "WARNING",
        }
    )
    reset_settings_cache()
    settings = get_settings()
    upgrade(database_url, quiet=True)
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    configure_app(settings)
    return settings


def put_catalogue(settings: Any, photos: list[bytes], count: int) -> list[str]:
    from jewelcut.db import Image, session_scope
    from jewelcut.storage import get_storage

    storage = get_storage(settings)
    ids = [f"img-{index:05d}" for index in range(count)]
    with session_scope(settings.resolved_database_url) as session:
        for index, image_id in enumerate(ids):
            uri = storage.put(f"sources/{image_id}.jpg", photos[index % PHOTOS], "image/jpeg")
            session.add(Image(id=image_id, listing_id=f"listing-{index}", source_uri=uri))
    return ids


def simulate_accelerator(accelerator: SimulatedAccelerator) -> None:
    """Every Segmenter this process builds gets the simulated accelerator as its backend."""
    import worker.backends

    worker.backends.make_backend = lambda *args, **kwargs: accelerator  # type: ignore[assignment]


def finished_rows(settings: Any) -> int:
    from sqlalchemy import func, select

    from jewelcut.db import Segmentation, session_scope

    with session_scope(settings.resolved_database_url) as session:
        query = select(func.count()).where(Segmentation.status.in_(("done", "failed")))
        return session.scalar(query) or 0


def forget_results(settings: Any) -> None:
    from sqlalchemy import delete

    from jewelcut.db import Segmentation, session_scope

    with session_scope(settings.resolved_database_url) as session:
        session.execute(delete(Segmentation))


def run(settings: Any, ids: list[str], in_flight: int, accelerator: SimulatedAccelerator) -> dict:
    from celery.contrib.testing.worker import start_worker
    from typer.testing import CliRunner

    from jewelcut.cli import app as cli
    from jewelcut.queue import CHUNK_QUEUES, app

    forget_results(settings)
    accelerator.busy.clear()
    # As `jewelcut worker` starts it (worker.commands._pool_options).
    pool = {"pool": "solo" if in_flight == 1 else "threads", "concurrency": in_flight}
    app.loader.import_default_modules()
    with start_worker(
        app, perform_ping_check=False, queues=list(CHUNK_QUEUES), loglevel="WARNING", **pool
    ):
        started = time.perf_counter()
        result = CliRunner().invoke(cli, ["enqueue", *ids])
        assert result.exit_code == 0, result.output
        while finished_rows(settings) < len(ids):
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    first, last = accelerator.busy[0][0], max(end for _, end in accelerator.busy)
    busy = sum(end - start for start, end in accelerator.busy)
    chunks = -(-len(ids) // settings.chunk_size)
    return {
        "in_flight": in_flight,
        "images_per_s": len(ids) / seconds,
        "busy_share": busy / (last - first),
        "idle_ms_per_chunk": 1000 * ((last - first) - busy) / chunks,
        "chunks": chunks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=6)
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--accelerator-ms", type=float, default=25.0, help="per image")
    args = parser.parse_args()
    model_dir = shipped_model_dir()
    photos = cached_photos(DEFAULT_CACHE, PHOTOS)
    replay_dir = cached_replay(DEFAULT_CACHE, model_dir, photos)
    accelerator = SimulatedAccelerator(
        ReplayBackend(replay_dir, PHOTOS, 16), args.accelerator_ms / 1000
    )
    simulate_accelerator(accelerator)
    count = args.chunks * args.chunk_size
    print(
        f"{count} images in {args.chunks} chunks of {args.chunk_size}; {accelerator.name}; "
        f"CPU stages real, in {os.cpu_count()} processes"
    )
    with own_database() as database, own_redis_index() as redis_url, moto_server() as s3_url:
        settings = configure(database, redis_url, s3_url, args)
        ids = put_catalogue(settings, photos, count)
        run(settings, ids[: args.chunk_size], 1, accelerator)  # warm-up: model, pools, caches
        results = [run(settings, ids, in_flight, accelerator) for in_flight in (1, 2)]
    for result in results:
        print(
            f"chunks in flight {result['in_flight']}: {result['images_per_s']:6.1f} images/s, "
            f"accelerator busy {result['busy_share']:.1%}, idle "
            f"{result['idle_ms_per_chunk']:.0f} ms per chunk"
        )
    one, two = (result["busy_share"] for result in results)
    print(f"accelerator busy: {one:.1%} one chunk in flight, {two:.1%} two")


if __name__ == "__main__":
    main()
