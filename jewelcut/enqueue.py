"""Admin enqueue: chosen image IDs ahead of the nightly work, on the priority queue.

Rows are recorded `queued` idempotently (INSERT .. ON CONFLICT DO NOTHING .. RETURNING), and only
the rows this call created are sent, so enqueueing the same IDs again adds no row, no message and
no object. `force` resets rows already finished (done or failed) to `queued` and sends them too.
Unknown IDs (not in the catalogue) are counted and left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jewelcut.db import RESULT_COLUMNS, Image, Run, Segmentation, session_scope, utcnow
from jewelcut.logs import get_logger
from jewelcut.queue import ChunkQueue
from jewelcut.registry import active_model_version, ensure_registered
from jewelcut.settings import Settings
from jewelcut.sql import insert_ignore_statement

log = get_logger(__name__)
BATCH_SIZE = 5000  # IDs per database round trip
FINISHED = ("done", "failed")
# What a reset row forgets: it is queued again, as if new.
CLEARED_RESULTS = dict.fromkeys((*RESULT_COLUMNS, "started_at"))


@dataclass
class EnqueueSummary:
    run_id: int
    model_version: str
    requested: int = 0
    queued: int = 0  # new rows
    reset: int = 0  # finished rows queued again (force)
    already_recorded: int = 0  # rows left as they were
    unknown: int = 0  # not in the catalogue
    chunks: int = 0

    @property
    def sent(self) -> int:
        return self.queued + self.reset


def enqueue_images(
    image_ids: Iterable[str],
    settings: Settings,
    queue: ChunkQueue,
    *,
    model_version: str | None = None,
    force: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> EnqueueSummary:
    """Record these images and send them to `queue` (the command's: the priority queue, or the
    worker in-process); `on_batch(n)` reports n more IDs handled."""

    model_version = model_version or active_model_version(settings)
    ensure_registered(model_version, settings)
    summary = EnqueueSummary(_start_run(model_version, force, settings), model_version)
    for batch in _batches(_unique(image_ids), BATCH_SIZE):
        to_send = _record_batch(batch, summary, force, settings)
        for chunk in _batches(iter(to_send), settings.chunk_size):
            queue.send(chunk, model_version, summary.run_id)
            summary.chunks += 1
        if on_batch:
            on_batch(len(batch))
    _finish_run(summary, settings)
    log.info("admin enqueue finished", extra=vars(summary))
    return summary


def _record_batch(
    batch: list[str], summary: EnqueueSummary, force: bool, settings: Settings
) -> list[str]:
    """Insert this batch's rows (and reset finished ones with force); the IDs to send."""
    summary.requested += len(batch)
    with session_scope(settings.resolved_database_url) as session:
        known = set(session.scalars(select(Image.id).where(Image.id.in_(batch))))
        summary.unknown += len(batch) - len(known)
        ids = [image_id for image_id in batch if image_id in known]
        created = _insert_queued(session, ids, summary) if ids else set()
        reset = _reset_finished(session, ids, summary) if force and ids else set()
    summary.queued += len(created)
    summary.reset += len(reset)
    summary.already_recorded += len(ids) - len(created) - len(reset)
    return [image_id for image_id in ids if image_id in created or image_id in reset]


def _insert_queued(session: Session, ids: Sequence[str], summary: EnqueueSummary) -> set[str]:
    now = utcnow()
    rows = [
        {
            "image_id": image_id,
            "model_version": summary.model_version,
            "status": "queued",
            "attempts": 0,
            "run_id": summary.run_id,
            "enqueued_at": now,
        }
        for image_id in ids
    ]
    statement = (
        insert_ignore_statement(
            session.connection(), Segmentation.__table__, ("image_id", "model_version")
        )
        .values(rows)
        .returning(Segmentation.image_id)
    )
    return set(session.scalars(statement))


def _reset_finished(session: Session, ids: Sequence[str], summary: EnqueueSummary) -> set[str]:
    statement = (
        update(Segmentation)
        .where(
            Segmentation.model_version == summary.model_version,
            Segmentation.image_id.in_(ids),
            Segmentation.status.in_(FINISHED),
        )
        .values(
            status="queued",
            attempts=0,
            run_id=summary.run_id,
            enqueued_at=utcnow(),
            **CLEARED_RESULTS,
        )
        .returning(Segmentation.image_id)
        .execution_options(synchronize_session=False)
    )
    return set(session.scalars(statement))


def _start_run(model_version: str, force: bool, settings: Settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        run = Run(kind="admin", model_version=model_version, options={"force": force})
        session.add(run)
        session.flush()
        return run.id


def _finish_run(summary: EnqueueSummary, settings: Settings) -> None:
    with session_scope(settings.resolved_database_url) as session:
        run = session.get_one(Run, summary.run_id)
        run.status = "finished"
        run.enqueued = summary.sent
        run.skipped = summary.already_recorded + summary.unknown
        run.chunks = summary.chunks
        run.finished_at = utcnow()


def _unique(image_ids: Iterable[str]) -> Iterator[str]:
    seen: set[str] = set()
    for raw in image_ids:
        image_id = raw.strip()
        if image_id and image_id not in seen:
            seen.add(image_id)
            yield image_id


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    while batch := list(islice(items, size)):
        yield batch
