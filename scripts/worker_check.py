"""End to end through a real `jewelcut worker`: the stage of scripts/gpu_check.py that runs the
product as deployed, not process_stream in the check's own process.

    python scripts/gpu_check.py --worker-images 1000       # on the GPU host, after the rest
    python scripts/worker_check.py --device cpu --images 16  # alone, here

The photos go to an S3 server as sources and into the catalogue (a Postgres database of its
own, created and dropped here); `jewelcut enqueue` puts them on Redis in chunks, and one
`jewelcut worker` process claims the chunks, segments on --device, uploads the cutouts and
records every image. The clock runs from the enqueue to the last recorded image, the worker
already started and its model loaded; images/s is over that span.

Services: --database-url reaches a Postgres server (a database is made there for the run),
--redis-url a Redis database that this run FLUSHES, --s3-endpoint an S3 server (without one,
moto's server is started here, as the tests do).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

JEWELCUT = shutil.which("jewelcut") or "jewelcut"  # on PATH, as operators run it
READY_TIMEOUT_S = 600  # the worker's start: imports, the model's load (and ONNX export on CPU)


@dataclass(frozen=True)
class Services:
    database_url: str  # SQLAlchemy URL of a database of the run's own
    redis_url: str
    s3_endpoint: str
    bucket: str


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--model", type=Path, help="model version folder (default: shipped)")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--distinct-photos", type=int, default=32, help="cycled")
    parser.add_argument("--photo-size", default="1280x960")
    add_service_options(parser)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from gpu_check import make_photos, write_report

    from jewelcut.modelcard import default_model_dir
    from jewelcut.settings import DEFAULT_MODELS_DIR

    model_dir = args.model or default_model_dir(DEFAULT_MODELS_DIR)
    photos = make_photos(args.distinct_photos, args.photo_size)
    report = run_worker_check(args, model_dir, photos)
    write_report({"worker": report}, args.json)


def add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--s3-endpoint", default=None, help="default: moto's server, started")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--chunks-in-flight", type=int, default=2)


def run_worker_check(
    args: argparse.Namespace, model_dir: Path, photos: list[bytes], images: int | None = None
) -> dict[str, Any]:
    """The stage, start to finish: services, catalogue, worker, enqueue, the figures."""
    images = images or args.images
    work = Path(tempfile.mkdtemp(prefix="worker-check-"))
    try:
        with services(args) as running:
            environment = worker_environment(running, model_dir, work, args)
            ids = load_catalogue(running, environment, photos, images)
            return time_the_worker(environment, running, ids, args.device, work / "worker.log")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def services(args: argparse.Namespace) -> Iterator[Services]:
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    with s3_endpoint(args.s3_endpoint) as endpoint, own_database(args.database_url) as database:
        bucket = f"worker-check-{uuid.uuid4().hex[:8]}"
        s3_client(endpoint).create_bucket(Bucket=bucket)
        yield Services(database, args.redis_url, endpoint, bucket)


@contextlib.contextmanager
def s3_endpoint(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    from tests.local_servers import ServerDidNotStart, moto_server

    try:
        with moto_server(timeout_s=60) as endpoint:
            yield endpoint
    except ServerDidNotStart as error:
        sys.exit(f"the S3 test server: {error}; pass --s3-endpoint")


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@contextlib.contextmanager
def own_database(server: str) -> Iterator[str]:
    """A database of the run's own on the Postgres server that `server` (a libpq URL or DSN)
    reaches; its SQLAlchemy URL. Dropped after."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy import URL

    name = f"worker_check_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        params = conninfo_to_dict(server)
        port = params.get("port")
        yield URL.create(
            "postgresql+psycopg",
            username=params.get("user"),
            password=params.get("password"),
            host=params.get("host"),
            port=int(port) if port else None,
            database=name,
        ).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker_environment(
    running: Services, model_dir: Path, work: Path, args: argparse.Namespace
) -> dict[str, str]:
    """The settings a deployment gives its worker, and the model under test as the only
    shipped version (its own models folder)."""
    models = work / "models"
    models.mkdir()
    (models / model_dir.name).symlink_to(model_dir.resolve())
    environment = {k: v for k, v in os.environ.items() if not k.startswith("JEWELCUT_")}
    return environment | {
        "JEWELCUT_DATABASE_URL": running.database_url,
        "JEWELCUT_BROKER_URL": running.redis_url,
        "JEWELCUT_S3_ENDPOINT_URL": running.s3_endpoint,
        "JEWELCUT_S3_ACCESS_KEY_ID": "testing",
        "JEWELCUT_S3_SECRET_ACCESS_KEY": "testing",
        "JEWELCUT_S3_BUCKET": running.bucket,
        "JEWELCUT_SOURCE_BUCKETS": json.dumps([running.bucket]),
        "JEWELCUT_MODELS_DIR": str(models),
        "JEWELCUT_MODEL_CACHE_DIR": str(work / "model-cache"),
        "JEWELCUT_DATA_DIR": str(work / "data"),
        "JEWELCUT_CHUNK_SIZE": str(args.chunk_size),
        "JEWELCUT_CHUNKS_IN_FLIGHT": str(args.chunks_in_flight),
        "JEWELCUT_LOG_LEVEL": "WARNING",
        "JEWELCUT_TORCH_COMPILE": getattr(args, "compile", "off"),
    }


def jewelcut(environment: dict[str, str], *arguments: str) -> None:
    finished = subprocess.run(
        [JEWELCUT, *arguments], env=environment, capture_output=True, text=True
    )
    if finished.returncode != 0:
        sys.exit(f"jewelcut {' '.join(arguments[:2])} failed:\n{finished.stderr[-3000:]}")


def load_catalogue(
    running: Services, environment: dict[str, str], photos: list[bytes], images: int
) -> list[str]:
    """Sources uploaded (the distinct photos, cycled), the catalogue migrated and filled."""
    from sqlalchemy import insert

    from jewelcut.db import Image, session_scope

    jewelcut(environment, "db", "upgrade")
    client = s3_client(running.s3_endpoint)
    for index, data in enumerate(photos):
        client.put_object(Bucket=running.bucket, Key=f"sources/{index}.jpg", Body=data)
    ids = [f"check-{index:06d}" for index in range(images)]
    rows = [
        {
            "id": image_id,
            "listing_id": f"listing-{index}",
            "source_uri": f"s3://{running.bucket}/sources/{index % len(photos)}.jpg",
        }
        for index, image_id in enumerate(ids)
    ]
    with session_scope(running.database_url) as session:
        session.execute(insert(Image), rows)
    return ids


def time_the_worker(
    environment: dict[str, str], running: Services, ids: list[str], device: str, log_path: Path
) -> dict[str, Any]:
    from gpu_check import GpuUtilisation

    command = [JEWELCUT, "worker", "--device", device, "--loglevel", "INFO"]
    with log_path.open("wb") as log:
        worker = subprocess.Popen(command, env=environment, stdout=log, stderr=log)
        try:
            wait_until_ready(worker, log_path)
            utilisation = GpuUtilisation(device)
            with utilisation:
                started = time.perf_counter()
                jewelcut(environment, "enqueue", *ids)
                counts = wait_until_recorded(running.database_url, len(ids), worker, log_path)
                seconds = time.perf_counter() - started
        finally:
            worker.send_signal(signal.SIGTERM)
            exit_code = worker.wait(timeout=120)
    rate = len(ids) / seconds
    print(
        f"\nthrough `jewelcut worker` (Redis, Postgres, S3): {rate:.1f} images/s, "
        f"{counts['done']}/{len(ids)} done, {counts['accepted']} accepted, {seconds:.1f} s"
        + (f"; GPU busy (NVML) {utilisation.mean:.0f}%" if utilisation.mean is not None else "")
    )
    return {
        "images": len(ids),
        "seconds": seconds,
        "images_per_s": rate,
        **counts,
        "nvml_utilisation_percent": utilisation.mean,
        "worker_exit_code": exit_code,
        "chunk_size": int(environment["JEWELCUT_CHUNK_SIZE"]),
        "chunks_in_flight": int(environment["JEWELCUT_CHUNKS_IN_FLIGHT"]),
    }


def wait_until_ready(worker: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until Celery says the worker is ready (its model is loaded before that)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            sys.exit(f"`jewelcut worker` exited with {worker.returncode}:\n{tail(log_path)}")
        if " ready." in log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    sys.exit(f"`jewelcut worker` was not ready within {READY_TIMEOUT_S} s:\n{tail(log_path)}")


def wait_until_recorded(
    database_url: str, count: int, worker: subprocess.Popen[bytes], log_path: Path
) -> dict[str, int]:
    """Until every image has its row, done or failed; the counts by outcome."""
    from sqlalchemy import func, select

    from jewelcut.db import Segmentation, session_scope

    outcome = (Segmentation.status, Segmentation.decision)
    while True:
        with session_scope(database_url) as session:
            rows = session.execute(select(*outcome, func.count()).group_by(*outcome)).all()
        finished = sum(n for status, _decision, n in rows if status in ("done", "failed"))
        if finished >= count:
            return {
                "done": sum(n for status, _decision, n in rows if status == "done"),
                "failed": sum(n for status, _decision, n in rows if status == "failed"),
                "accepted": sum(n for _status, decision, n in rows if decision == "accepted"),
            }
        if worker.poll() is not None:
            sys.exit(f"`jewelcut worker` exited with {worker.returncode}:\n{tail(log_path)}")
        time.sleep(0.25)


def tail(path: Path, characters: int = 3000) -> str:
    return path.read_text(errors="replace")[-characters:]


if __name__ == "__main__":
    main()
