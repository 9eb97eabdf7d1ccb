"""The reaper: Postgres is the source of truth, not the broker.

A row still `processing` past settings.processing_timeout_s (from when a worker started it) lost
its worker; a row still `queued` that long after it was enqueued lost its message, but only if
no chunk message is waiting in the broker any more: while the queues hold messages, a queued
row may simply be behind them, and sending it again would only pile duplicates onto a slow
queue; nor is a queued row lost while a worker holds its chunk unacknowledged (taken from the
queue, not claimed yet). The reaper sends such rows again on the bulk queue, unless they have
already been tried settings.max_attempts times: then they end `failed` with reason
`too_many_attempts`, so a poison image never loops. Attempts are counted by the worker when it
claims an image.

Rows are taken in batches (FOR UPDATE SKIP LOCKED on Postgres, so two reapers never take the same
row), marked in the same transaction, and sent after it commits. Marking a row only changes its
status, enqueued_at, started_at and run: a result it had (a forced reprocess) stays until the
worker records the new one. If the reaper dies or the broker goes away before sending, the rows
carry a fresh enqueued_at and the next pass after the deadline takes them again; the pass's
runs row ends `failed` with the error (`finished` once its chunks are sent).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, false, not_, or_, select, update
from sqlalchemy.engine import Connection, Engine

from jewelcut.db import (
    TOO_MANY_ATTEMPTS,
    Run,
    Segmentation,
    get_engine,
    given_up_values,
    run_error,
    utcnow,
)
from jewelcut.logs import get_logger
from jewelcut.queue import ChunkQueue, held_chunks, queue_depth
from jewelcut.settings import Settings

log = get_logger(__name__)

REAP_BATCH_SIZE = 1000


@dataclass
class ReapResult:
    requeued: int = 0
    failed: int = 0
    chunks: int = 0
    by_model_version: dict[str, int] = field(default_factory=dict)


@dataclass
class _Stale:
    image_id: str
    model_version: str
    attempts: int


def reap(
    settings: Settings,
    queue: ChunkQueue,
    now: datetime | None = None,
    batch_size: int = REAP_BATCH_SIZE,
) -> ReapResult:
    """One pass: re-enqueue or give up on every row past its deadline. Returns the counts."""
    engine = get_engine(settings.resolved_database_url)
    now = now or utcnow()
    deadline = now - timedelta(seconds=settings.processing_timeout_s)
    waiting = queue_depth(settings)  # chunk messages on the priority and bulk queues
    if waiting:
        log.info("queued rows not reaped: chunk messages still waiting", extra={"waiting": waiting})
    held = [] if waiting else held_chunks(settings)
    result = ReapResult()
    while True:
        requeue, gave_up = _take_batch(
            engine, settings, now, deadline, batch_size, not waiting, held
        )
        if not requeue and not gave_up:
            break
        result.failed += len(gave_up)
        _send_batch(engine, queue, settings, requeue, result)
    if result.requeued or result.failed:
        log.info(
            "reaper pass",
            extra={"requeued": result.requeued, "failed": result.failed, "chunks": result.chunks},
        )
    return result


def _take_batch(
    engine: Engine,
    settings: Settings,
    now: datetime,
    deadline: datetime,
    batch_size: int,
    include_queued: bool,
    held: list[tuple[list[str], str]],
) -> tuple[dict[str, list[str]], list[_Stale]]:
    """Mark one batch of stale rows (queued again with enqueued_at = now, or failed) and return
    what to send: {model_version: (run_id, image_ids)}. Marked rows are no longer past the
    deadline, so the next batch is new rows."""
    with engine.begin() as connection:
        stale = [
            _Stale(row.image_id, row.model_version, row.attempts)
            for row in connection.execute(
                _stale_query(connection, deadline, batch_size, include_queued, held)
            )
        ]
        gave_up = [row for row in stale if row.attempts >= settings.max_attempts]
        requeue: dict[str, tuple[int, list[str]]] = {}
        for model_version, image_ids in _by_version(gave_up).items():
            _give_up(connection, model_version, image_ids, settings.max_attempts, now)
        to_send = [row for row in stale if row.attempts < settings.max_attempts]
        for model_version, image_ids in _by_version(to_send).items():
            run_id = _record_run(
                connection, model_version, len(image_ids), settings.chunk_size, now
            )
            _mark_queued(connection, model_version, image_ids, run_id, now)
            requeue[model_version] = (run_id, image_ids)
    return requeue, gave_up


def _stale_query(
    connection: Connection,
    deadline: datetime,
    batch_size: int,
    include_queued: bool,
    held: list[tuple[list[str], str]],
) -> Select:
    segmentation = Segmentation.__table__.c
    stale = and_(segmentation.status == "processing", segmentation.started_at < deadline)
    if include_queued:
        lost = and_(
            or_(segmentation.enqueued_at < deadline, segmentation.enqueued_at.is_(None)),
            not_(_in_chunks(held)),
        )
        stale = or_(stale, and_(segmentation.status == "queued", lost))
    query = (
        select(segmentation.image_id, segmentation.model_version, segmentation.attempts)
        .where(stale)
        .order_by(segmentation.model_version, segmentation.image_id)
        .limit(batch_size)
    )
    if connection.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return query


def _in_chunks(chunks: list[tuple[list[str], str]]) -> ColumnElement[bool]:
    """Rows of these (image_ids, model_version) chunks."""
    segmentation = Segmentation.__table__.c
    return or_(
        false(),
        *(
            and_(segmentation.model_version == version, segmentation.image_id.in_(image_ids))
            for image_ids, version in chunks
        ),
    )


def _by_version(rows: list[_Stale]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        grouped[row.model_version].append(row.image_id)
    return grouped


def _unfinished(model_version: str, image_ids: list[str]) -> ColumnElement[bool]:
    segmentation = Segmentation.__table__.c
    return and_(
        segmentation.model_version == model_version,
        segmentation.image_id.in_(image_ids),
        segmentation.status.in_(("queued", "processing")),
    )


def _give_up(
    connection: Connection,
    model_version: str,
    image_ids: list[str],
    max_attempts: int,
    now: datetime,
) -> None:
    connection.execute(
        update(Segmentation.__table__)
        .where(_unfinished(model_version, image_ids))
        .values(**given_up_values(max_attempts, now))
    )
    for image_id in image_ids:
        log.warning(
            "image failed: too many attempts",
            extra={
                "image_id": image_id,
                "model_version": model_version,
                "reason": TOO_MANY_ATTEMPTS,
            },
        )


def _mark_queued(
    connection: Connection, model_version: str, image_ids: list[str], run_id: int, now: datetime
) -> None:
    connection.execute(
        update(Segmentation.__table__)
        .where(_unfinished(model_version, image_ids))
        .values(status="queued", enqueued_at=now, started_at=None, run_id=run_id)
    )


def _record_run(
    connection: Connection, model_version: str, images: int, chunk_size: int, now: datetime
) -> int:
    """A reaper pass that re-enqueues anything leaves a runs row, one per model version: running
    until its chunks are sent."""
    return connection.execute(
        Run.__table__.insert()
        .values(
            kind="reaper",
            model_version=model_version,
            status="running",
            enqueued=images,
            skipped=0,
            chunks=-(-images // chunk_size),
            options={},
            started_at=now,
        )
        .returning(Run.id)
    ).scalar_one()


def _send_batch(
    engine: Engine,
    queue: ChunkQueue,
    settings: Settings,
    requeue: dict[str, tuple[int, list[str]]],
    result: ReapResult,
) -> None:
    """Send each model version's chunks and end its run: finished, or failed with the error
    (it and the runs after it); what was not sent waits, queued, for the next pass."""
    unsent = {run_id for run_id, _ in requeue.values()}
    try:
        for model_version, (run_id, image_ids) in requeue.items():
            _send(queue, settings, model_version, image_ids, result)
            _end_runs(engine, [run_id], "finished")
            unsent.discard(run_id)
    except BaseException as error:
        with suppress(Exception):  # the database may be what failed: keep the first error
            _end_runs(engine, sorted(unsent), "failed", run_error(error))
        raise


def _end_runs(engine: Engine, run_ids: list[int], status: str, error: str | None = None) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(Run.__table__)
            .where(Run.__table__.c.id.in_(run_ids))
            .values(status=status, error=error, finished_at=utcnow())
        )


def _send(
    queue: ChunkQueue,
    settings: Settings,
    model_version: str,
    image_ids: list[str],
    result: ReapResult,
) -> None:
    for start in range(0, len(image_ids), settings.chunk_size):
        chunk = image_ids[start : start + settings.chunk_size]
        queue.send(chunk, model_version, None)
        result.chunks += 1
        result.requeued += len(chunk)
        log.info(
            "chunk re-enqueued",
            extra={
                "model_version": model_version,
                "first_image_id": chunk[0],
                "last_image_id": chunk[-1],
                "images": len(chunk),
            },
        )
    result.by_model_version[model_version] = result.by_model_version.get(model_version, 0) + len(
        image_ids
    )
