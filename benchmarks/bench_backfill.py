"""Backfill enqueue rate over a large catalogue, against local Postgres and Redis.

Creates its own Postgres database and claims an empty Redis database index, loads N catalogue
rows with COPY, then times one backfill (no worker running, backpressure off) and prints the
IDs enqueued per second and the producer's memory: its RSS sampled as the run goes (it must stay
flat, whatever the catalogue's size) and its peak. Everything is dropped afterwards.

    python benchmarks/bench_backfill.py                 # 1,000,000 rows
    python benchmarks/bench_backfill.py --rows 100000   # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
import uuid
from collections.abc import Iterator

import psycopg
import redis

from jewelcut.migrate import upgrade
from jewelcut.settings import Settings
from producer.backfill import BackfillOptions, run_backfill
from producer.queueing import chunk_queue

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REDIS_SERVER = "redis://127.0.0.1:6379"
MODEL_VERSION = "bench-model"


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    name = f"jewelcut_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from jewelcut.db import get_engine

        get_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}").dispose()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def own_redis_index() -> Iterator[str]:
    for index in range(15, 0, -1):
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{index}")
        if client.dbsize() == 0:
            client.set("jewelcut:bench", "claimed")
            try:
                yield f"{REDIS_SERVER}/{index}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no empty Redis database index")


def load_catalogue(database_url: str, rows: int) -> float:
    """COPY `rows` images and the model version row; returns the seconds it took."""
    started = time.perf_counter()
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as connection:
        connection.execute(
            "INSERT INTO model_versions (name, architecture, weights_uri, sha256, input_size,"
            " min_area, max_area, min_confidence, metrics, card, created_at) VALUES"
            " (%s, 'Unet/efficientnet-b3', 'file:///bench', '', 320, 0.05, 0.5, 0.98, '{}', '{}',"
            " now())",
            (MODEL_VERSION,),
        )
        with connection.cursor().copy(
            "COPY images (id, listing_id, source_uri, created_at, updated_at) FROM STDIN"
        ) as copy:
            for index in range(rows):
                image_id = f"{index:012d}"
                copy.write_row(
                    (image_id, f"L{index // 4}", f"s3://photos/{image_id}.jpg", "now", "now")
                )
        connection.execute("ANALYZE images")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=Settings().chunk_size)
    parser.add_argument("--page-size", type=int, default=Settings().backfill_page_size)
    arguments = parser.parse_args()

    with own_database() as database_url, own_redis_index() as redis_url:
        upgrade(database_url)
        load_seconds = load_catalogue(database_url, arguments.rows)
        print(f"catalogue: {arguments.rows:,} rows loaded by COPY in {load_seconds:.1f}s")
        settings = Settings(
            database_url=database_url,
            broker_url=redis_url,
            model_version=MODEL_VERSION,
            chunk_size=arguments.chunk_size,
            backfill_page_size=arguments.page_size,
            backfill_max_queued_chunks=0,
        )
        from jewelcut.queue import configure_app

        configure_app(settings)
        samples: list[tuple[int, float, float]] = []  # (IDs handled, seconds, RSS MiB)
        handled = 0
        started = time.perf_counter()

        def sample(n: int) -> None:
            nonlocal handled
            handled += n
            if not samples or handled - samples[-1][0] >= arguments.rows // 10:
                samples.append((handled, time.perf_counter() - started, rss_mib()))

        rss_before = rss_mib()
        result = run_backfill(
            settings, BackfillOptions(), queue=chunk_queue(settings), on_progress=sample
        )
        samples.append((handled, time.perf_counter() - started, rss_mib()))
        in_redis = redis.Redis.from_url(redis_url).llen("bulk")

    print(
        f"backfill: {result.enqueued:,} IDs in {result.chunks:,} chunks of {arguments.chunk_size}"
        f" (pages of {arguments.page_size}) in {result.seconds:.1f}s"
        f" = {result.ids_per_s:,.0f} IDs/s; {in_redis:,} messages in Redis"
    )
    print(f"RSS before the run: {rss_before:.0f} MiB")
    print("during the run (IDs handled: seconds, RSS):")
    for n, seconds, mib in samples:
        print(f"  {n:>12,}: {seconds:6.1f}s {mib:5.0f} MiB")
    print(f"peak RSS of the producer process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
