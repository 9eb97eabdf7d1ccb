"""The Celery app, its queues and the one way to send a chunk: a `ChunkQueue`.

Redis is only the transport: Postgres is the source of truth. Messages are acknowledged after the
task ran (acks_late) and given back when a worker dies (reject_on_worker_lost), each worker takes
one message at a time (prefetch 1), and the visibility timeout is above the slowest chunk so Redis
does not hand a running chunk to a second worker.

Whoever sends chunks (admin enqueue, the backfill, the reaper) is handed a ChunkQueue by its
command: `CeleryChunkQueue` here, or in embedded mode (no broker URL) the worker's
`worker.inprocess.InProcessChunkQueue`, which runs each chunk in-process, synchronously.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from celery import Celery
from celery.schedules import crontab

from jewelcut.settings import Settings, get_settings

CHUNK_TASK = "jewelcut.process_chunk"
BACKFILL_TASK = "jewelcut.backfill"
REAP_TASK = "jewelcut.reap"

BULK_QUEUE = "bulk"  # nightly backfill
PRIORITY_QUEUE = "priority"  # admin enqueue, ahead of the nightly work
CONTROL_QUEUE = "control"  # backfill and reaper runs: never behind (or blocking) GPU work
CHUNK_QUEUES = (PRIORITY_QUEUE, BULK_QUEUE)
TASK_MODULES = ("worker.tasks", "producer.tasks")

# kombu's Redis transport keeps a queue as a list named after it, plus one list per priority
# step ("<queue>\x06\x16<n>") when message priorities are used.
_REDIS_PRIORITY_STEPS = (0, 3, 6, 9)
# ... and every message it has delivered to a worker and not yet seen acknowledged in a hash.
_REDIS_UNACKED_KEY = "unacked"


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url or "memory://",
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            # How often a worker looks for messages a dead worker held past the visibility
            # timeout and puts them back (kombu's default sweep is every ~100 s).
            "unacked_restore_interval": restore_interval_s(settings),
            "unacked_restore_throttle": 1,
            # Consume queues in the order a worker lists them (priority before bulk), not in turn.
            "queue_order_strategy": "priority",
        },
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,  # results live in Postgres
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,  # jewelcut.logs owns the root logger
        "worker_redirect_stdouts": False,
        "task_default_queue": BULK_QUEUE,
        "task_create_missing_queues": True,
        "task_routes": {
            CHUNK_TASK: {"queue": BULK_QUEUE},
            BACKFILL_TASK: {"queue": CONTROL_QUEUE},
            REAP_TASK: {"queue": CONTROL_QUEUE},
        },
        "beat_schedule": beat_schedule(settings),
        "timezone": "UTC",
        "enable_utc": True,
    }


def restore_interval_s(settings: Settings) -> int:
    """A quarter of the visibility timeout, between 1 s and a minute."""
    return max(1, min(60, settings.visibility_timeout_s // 4))


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    minute, hour, day_of_month, month_of_year, day_of_week = settings.backfill_cron.split()
    return {
        "nightly-backfill": {
            "task": BACKFILL_TASK,
            "schedule": crontab(
                minute=minute,
                hour=hour,
                day_of_month=day_of_month,
                month_of_year=month_of_year,
                day_of_week=day_of_week,
            ),
        },
        "reaper": {"task": REAP_TASK, "schedule": float(settings.reaper_interval_s)},
    }


app = Celery("jewelcut", include=list(TASK_MODULES))
app.conf.update(celery_config(get_settings()))


def configure_app(settings: Settings) -> Celery:
    """Point the app at these settings' broker (tests and CLIs that change the environment)."""
    app.close()  # drops pooled connections to the previous broker ...
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None  # ... and its producers, which Celery's close() keeps
    app.conf.update(celery_config(settings))
    return app


class ChunkQueue(Protocol):
    """Where chunks go: sends never touch the database (callers record the rows first)."""

    def send(self, image_ids: Sequence[str], model_version: str, run_id: int | None) -> None: ...

    def depth(self) -> int:
        """Chunks waiting in the queue (0 where it cannot be known, e.g. embedded mode)."""
        ...


class CeleryChunkQueue:
    """One of the broker's chunk queues: `bulk` (backfill, reaper) or `priority` (admin)."""

    def __init__(self, settings: Settings, name: str = BULK_QUEUE) -> None:
        if name not in CHUNK_QUEUES:
            raise ValueError(f"unknown chunk queue {name!r}; expected one of {CHUNK_QUEUES}")
        self.settings, self.name = settings, name

    def send(self, image_ids: Sequence[str], model_version: str, run_id: int | None) -> None:
        if app.conf.broker_url != self.settings.broker_url:
            configure_app(self.settings)
        app.send_task(CHUNK_TASK, args=[list(image_ids), model_version, run_id], queue=self.name)

    def depth(self) -> int:
        return queue_depth(self.settings, (self.name,))


def queue_depth(
    settings: Settings | None = None, queues: str | Sequence[str] = CHUNK_QUEUES
) -> int:
    """Chunk messages waiting in the broker (not those a worker holds unacknowledged)."""
    settings = settings or get_settings()
    if settings.embedded:
        return 0
    import redis

    names = [queues] if isinstance(queues, str) else list(queues)
    keys = [
        key
        for name in names
        for key in [name, *(f"{name}\x06\x16{step}" for step in _REDIS_PRIORITY_STEPS[1:])]
    ]
    client = redis.Redis.from_url(settings.broker_url)
    try:
        with client.pipeline() as pipe:
            for key in keys:
                pipe.llen(key)
            return int(sum(pipe.execute()))
    finally:
        client.close()


def held_chunks(settings: Settings | None = None) -> list[tuple[list[str], str]]:
    """Chunks a worker has taken from the broker and not acknowledged yet (it is running them,
    or about to): (image_ids, model_version) each. Their rows may still be `queued`."""
    settings = settings or get_settings()
    if settings.embedded:
        return []
    import redis

    client = redis.Redis.from_url(settings.broker_url)
    try:
        deliveries = client.hvals(_REDIS_UNACKED_KEY)
    finally:
        client.close()
    chunks = []
    for delivery in deliveries:
        message, _exchange, _routing_key = json.loads(delivery)
        if (chunk := chunk_of_message(message)) is not None:
            chunks.append(chunk)
    return chunks


def chunk_of_message(message: dict[str, Any]) -> tuple[list[str], str] | None:
    """A kombu message as the Redis transport stores it -> (image_ids, model_version), or None
    for any other task."""
    if message.get("headers", {}).get("task") != CHUNK_TASK:
        return None
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, _kwargs, _embed = json.loads(body)
    return [str(image_id) for image_id in args[0]], str(args[1])


@dataclass(frozen=True)
class Backlog:
    """Unfinished rows in Postgres, the source of truth (the broker may have lost messages)."""

    queued: int
    processing: int
    stale: int  # processing past the processing timeout: the reaper will re-enqueue them


def backlog(settings: Settings | None = None) -> Backlog:
    from sqlalchemy import func, select

    from jewelcut.db import Segmentation, session_scope, utcnow

    settings = settings or get_settings()
    stale_before = utcnow() - timedelta(seconds=settings.processing_timeout_s)
    processing = Segmentation.status == "processing"
    query = select(
        func.count().filter(Segmentation.status == "queued"),
        func.count().filter(processing),
        func.count().filter(processing & (Segmentation.started_at < stale_before)),
    ).where(Segmentation.status.in_(("queued", "processing")))
    with session_scope(settings.resolved_database_url) as session:
        queued, in_progress, stale = session.execute(query).one()
    return Backlog(queued, in_progress, stale)
