"""Producer fixtures: a catalogue in the session's Postgres, registered model versions, and the
chunk messages really waiting in the session's Redis (workers not running)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable

import pytest

from jewelcut.modelcard import ModelCard
from jewelcut.queue import chunk_of_message
from jewelcut.registry import register_model_version
from jewelcut.settings import Settings
from producer.catalogue import import_rows, make_row

CATALOGUE_SIZE = 2000


def register_version(settings: Settings, name: str) -> str:
    """A model_versions row (the producer needs the row, never the weights)."""
    register_model_version(
        ModelCard(name=name), f"file:///models/{name}/weights.safetensors", settings
    )
    return name


def image_id(index: int) -> str:
    return f"img-{index:07d}"


def fill_catalogue(settings: Settings, count: int, start: int = 0) -> list[str]:
    ids = [image_id(index) for index in range(start, start + count)]
    rows = (make_row(i, f"listing-{i[-4:]}", f"s3://photos/{i}.jpg") for i in ids)
    summary = import_rows(settings, rows)
    assert summary.inserted == count
    return ids


def queued_chunks(redis_url: str, queue: str = "bulk") -> list[tuple[list[str], str]]:
    """Every chunk message waiting in the queue: (image_ids, model_version), oldest first."""
    import redis

    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        raw_messages = client.lrange(queue, 0, -1)
    # kombu LPUSHes and consumers BRPOP
    chunks = [chunk_of_message(json.loads(raw)) for raw in reversed(raw_messages)]
    return [chunk for chunk in chunks if chunk is not None]


def enqueued_counts(redis_url: str) -> Counter[str]:
    """How many times each image ID has been sent (over every model version)."""
    return Counter(i for ids, _version in queued_chunks(redis_url) for i in ids)


@pytest.fixture
def producer_settings(distributed_settings: Settings) -> Settings:
    """Postgres + Redis; pages and chunks that do not divide each other; backpressure off."""
    return distributed_settings.model_copy(
        update={"chunk_size": 64, "backfill_page_size": 300, "backfill_max_queued_chunks": 0}
    )


@pytest.fixture
def catalogue(producer_settings: Settings) -> list[str]:
    register_version(producer_settings, "v1")
    return fill_catalogue(producer_settings, CATALOGUE_SIZE)


@pytest.fixture
def messages(redis_url: str) -> Callable[[], Counter[str]]:
    """() -> how many times each image ID waits in the bulk queue."""
    return lambda: enqueued_counts(redis_url)


@pytest.fixture
def chunks_in_queue(redis_url: str) -> Callable[[], list[tuple[list[str], str]]]:
    """() -> the chunk messages waiting in the bulk queue: (image_ids, model_version)."""
    return lambda: queued_chunks(redis_url)


@pytest.fixture
def register() -> Callable[[Settings, str], str]:
    return register_version


@pytest.fixture
def fill() -> Callable[..., list[str]]:
    return fill_catalogue
