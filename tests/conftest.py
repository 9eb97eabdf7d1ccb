"""Shared fixtures: real Postgres, Redis and an S3 server, isolated per pytest session.

- Postgres: a uniquely named database per session (several engineers test at once), dropped after.
- Redis: a random empty database index, flushed after.
- S3: a moto server subprocess on a free port, or MinIO when JEWELCUT_S3_ENDPOINT_URL is set;
  a bucket of the session's own, emptied before each distributed test.
- Settings: `distributed_settings` and `embedded_settings` set the JEWELCUT_* environment for one
  test (tasks read `get_settings()`, as in production) and return the matching Settings.
- `test_models_dir`: the shipped models/ when a default is there, else a randomly initialised
  real Unet (smp, efficientnet-b3) saved as a model version in a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from jewelcut.settings import DEFAULT_MODELS_DIR, Settings, get_settings, reset_settings_cache
from tests.local_servers import moto_server

POSTGRES_ADMIN_DSN = os.environ.get(
    "JEWELCUT_TEST_POSTGRES_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
REDIS_SERVER_URL = os.environ.get("JEWELCUT_TEST_REDIS_URL", "redis://127.0.0.1:6379")
TEST_MODEL_NAME = "random-init-test"
TEST_INPUT_SIZE = 160
# What the outer environment said before any test touched it (MinIO in compose's test service).
OUTER_S3_ENDPOINT = os.environ.get("JEWELCUT_S3_ENDPOINT_URL")
OUTER_S3_ACCESS_KEY = os.environ.get("JEWELCUT_S3_ACCESS_KEY_ID", "testing")
OUTER_S3_SECRET_KEY = os.environ.get("JEWELCUT_S3_SECRET_ACCESS_KEY", "testing")


# --------------------------------------------------------------------------------- Postgres ---


def _postgres_admin() -> psycopg.Connection:
    return psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True)


def _sqlalchemy_postgres_url(database: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(POSTGRES_ADMIN_DSN)
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    host, port = params.get("host", "127.0.0.1"), params.get("port", 5432)
    return f"postgresql+psycopg://{user}{password}@{host}:{port}/{database}"


@contextlib.contextmanager
def _temporary_postgres_database(label: str) -> Iterator[str]:
    name = f"jewelcut_{label}_{uuid.uuid4().hex[:10]}"
    with _postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _sqlalchemy_postgres_url(name)
    try:
        yield url
    finally:
        from jewelcut.db import get_engine

        get_engine(url).dispose()
        with _postgres_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A session's own Postgres database, migrated to head."""
    from jewelcut.migrate import upgrade

    with _temporary_postgres_database("test") as url:
        upgrade(url)
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A fresh, empty Postgres database for one test (migration tests)."""
    with _temporary_postgres_database("empty") as url:
        yield url


def truncate_all(database_url: str) -> None:
    from sqlalchemy import text

    from jewelcut.db import Base, get_engine

    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with get_engine(database_url).begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


# ------------------------------------------------------------------------------------ Redis ---


REDIS_CLAIM_KEY = "jewelcut:test-session"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database index nobody else is using (claimed by a key), flushed after the session."""
    import redis

    token = uuid.uuid4().hex
    indexes = list(range(1, 16))
    random.shuffle(indexes)
    for index in indexes:
        url = f"{REDIS_SERVER_URL}/{index}"
        client = redis.Redis.from_url(url)
        if client.set(REDIS_CLAIM_KEY, token, nx=True):
            if client.dbsize() == 1:
                try:
                    yield url
                finally:
                    client.flushdb()
                    client.close()
                return
            client.delete(REDIS_CLAIM_KEY)  # not claimed, but holds somebody's data
        client.close()
    pytest.fail("no free Redis database index left (1..15)")


def flush_redis(url: str) -> None:
    """Empty the session's Redis database, keeping the session's claim on it."""
    import redis

    with contextlib.closing(redis.Redis.from_url(url)) as client:
        token = client.get(REDIS_CLAIM_KEY)
        client.flushdb()
        client.set(REDIS_CLAIM_KEY, token or uuid.uuid4().hex)


# --------------------------------------------------------------------------------------- S3 ---


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key_id: str
    secret_access_key: str


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    if OUTER_S3_ENDPOINT:
        yield S3Server(OUTER_S3_ENDPOINT, OUTER_S3_ACCESS_KEY, OUTER_S3_SECRET_KEY)
        return
    with moto_server() as endpoint:
        yield S3Server(endpoint, "testing", "testing")


def _admin_s3_client(s3_server: S3Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key_id,
        aws_secret_access_key=s3_server.secret_access_key,
        region_name="us-east-1",
    )


@pytest.fixture
def s3_client(s3_server: S3Server) -> Any:
    """A boto3 S3 client of the test server, to put objects the code under test reads."""
    return _admin_s3_client(s3_server)


@pytest.fixture(scope="session")
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A private bucket of this session's own (cutouts, and the photos tests put as sources)."""
    name = f"jewelcut-test-{uuid.uuid4().hex[:12]}"
    client = _admin_s3_client(s3_server)
    client.create_bucket(Bucket=name)
    yield name
    empty_bucket(s3_server, name)
    client.delete_bucket(Bucket=name)


def empty_bucket(s3_server: S3Server, bucket: str) -> None:
    client = _admin_s3_client(s3_server)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


# ----------------------------------------------------------------------------------- models ---


def shipped_default_exists() -> bool:
    return any(DEFAULT_MODELS_DIR.glob("*/model.json"))


@pytest.fixture(scope="session")
def test_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JEWELCUT_TEST_MODELS_DIR (a candidate's folder) if set; models/ when the trained default
    is shipped; else a random-init real Unet version."""
    if os.environ.get("JEWELCUT_TEST_MODELS_DIR"):
        return Path(os.environ["JEWELCUT_TEST_MODELS_DIR"])
    if shipped_default_exists():
        return DEFAULT_MODELS_DIR
    from worker.model import save_random_init

    models_dir = tmp_path_factory.mktemp("models")
    save_random_init(models_dir, TEST_INPUT_SIZE, name=TEST_MODEL_NAME)
    return models_dir


@pytest.fixture(scope="session")
def test_model_name(test_models_dir: Path) -> str:
    from jewelcut.modelcard import ModelCard, default_model_dir

    return ModelCard.read(default_model_dir(test_models_dir)).name


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the session's tests so exported/downloaded weights are made once."""
    return tmp_path_factory.mktemp("model-cache")


# --------------------------------------------------------------------------------- settings ---


def _apply_environment(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> Settings:
    for name in list(os.environ):
        if name.startswith("JEWELCUT_") and not name.startswith(
            ("JEWELCUT_TEST_", "JEWELCUT_SECRETS")
        ):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    return get_settings()


def _common_environment(data_dir: Path, models_dir: Path, cache_dir: Path) -> dict[str, str]:
    return {
        "JEWELCUT_DATA_DIR": str(data_dir),
        "JEWELCUT_MODELS_DIR": str(models_dir),
        "JEWELCUT_MODEL_CACHE_DIR": str(cache_dir),
        "JEWELCUT_DEVICE": "cpu",
        "JEWELCUT_IO_THREADS": "4",
        "JEWELCUT_CHUNK_SIZE": "8",
        "JEWELCUT_LOG_LEVEL": "WARNING",
        # The workers' chunks at once: JEWELCUT_TEST_CHUNKS_IN_FLIGHT=2 runs the worker
        # processes of the fault tests two chunks at once (docs/architecture.md).
        "JEWELCUT_CHUNKS_IN_FLIGHT": os.environ.get("JEWELCUT_TEST_CHUNKS_IN_FLIGHT", "1"),
    }


@pytest.fixture
def embedded_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, test_models_dir: Path, model_cache_dir: Path
) -> Iterator[Settings]:
    """No services: SQLite and a local folder under tmp_path, tasks in-process; migrated."""
    from jewelcut.migrate import upgrade

    settings = _apply_environment(
        monkeypatch, _common_environment(tmp_path / "data", test_models_dir, model_cache_dir)
    )
    assert settings.embedded
    upgrade(settings.resolved_database_url)
    yield settings
    reset_settings_cache()


@pytest.fixture
def distributed_settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    s3_server: S3Server,
    s3_bucket: str,
    test_models_dir: Path,
    model_cache_dir: Path,
) -> Iterator[Settings]:
    """Postgres (tables emptied), Redis (flushed), the S3 bucket (emptied); the Celery app points
    there."""

    from jewelcut.queue import configure_app

    truncate_all(postgres_url)
    flush_redis(redis_url)
    empty_bucket(s3_server, s3_bucket)
    values = _common_environment(tmp_path / "data", test_models_dir, model_cache_dir)
    values |= {
        "JEWELCUT_DATABASE_URL": postgres_url,
        "JEWELCUT_BROKER_URL": redis_url,
        "JEWELCUT_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "JEWELCUT_S3_ACCESS_KEY_ID": s3_server.access_key_id,
        "JEWELCUT_S3_SECRET_ACCESS_KEY": s3_server.secret_access_key,
        "JEWELCUT_S3_BUCKET": s3_bucket,
        "JEWELCUT_SOURCE_BUCKETS": f'["{s3_bucket}"]',
    }
    settings = _apply_environment(monkeypatch, values)
    assert not settings.embedded
    configure_app(settings)
    yield settings
    reset_settings_cache()


@pytest.fixture
def celery_worker_thread(distributed_settings: Settings) -> Iterator[object]:
    """A real Celery worker (solo pool, in a thread) consuming both chunk queues over Redis."""
    from celery.contrib.testing.worker import start_worker

    from jewelcut.queue import CHUNK_QUEUES, app

    app.loader.import_default_modules()
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=list(CHUNK_QUEUES),
        loglevel="WARNING",
        shutdown_timeout=60,
    ) as worker:
        yield worker


# ----------------------------------------------------------------------------------- photos ---


def draw_listing_photo(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG listing photo: a gold ring (or pendant) on a soft, plain background."""
    import cv2

    rng = np.random.default_rng(seed)
    width, height = size
    background = rng.integers(150, 245, size=3)
    gradient = np.linspace(-20, 20, height)[:, None, None]
    photo = np.clip(background[None, None, :] + gradient, 0, 255).astype(np.uint8)
    photo = np.ascontiguousarray(np.broadcast_to(photo, (height, width, 3)))
    centre = (int(width * rng.uniform(0.4, 0.6)), int(height * rng.uniform(0.4, 0.6)))
    radius = int(min(width, height) * rng.uniform(0.18, 0.3))
    gold = (40, 170, 215)  # BGR
    cv2.circle(photo, centre, radius, gold, thickness=max(4, radius // 4), lineType=cv2.LINE_AA)
    stone = (centre[0], centre[1] - radius)
    cv2.circle(photo, stone, max(4, radius // 4), (200, 60, 40), -1, lineType=cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def synth_listing_photo(
    seed: int, size: tuple[int, int] = (320, 240), kind: str | None = None
) -> bytes:
    """A JPEG of training.synth's listing photo (procedural jewellery on a background)."""
    import cv2

    from training.synth import listing_photo

    rgb, _mask = listing_photo(np.random.default_rng(10_000 + seed), *size, kind=kind)
    ok, encoded = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="session")
def listing_photo() -> Callable[..., bytes]:
    """(seed, kind=None) -> JPEG bytes of a synthetic jewellery listing photo."""
    return synth_listing_photo


@pytest.fixture
def make_proxy() -> Iterator[Callable[[str, int], Any]]:
    """(host, port) -> a TcpProxy in front of it (tests/faults/harness.py), closed after the test:
    a service's outage as its clients see it."""
    from tests.faults.harness import TcpProxy

    proxies: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxies.append(TcpProxy(host, port))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()
