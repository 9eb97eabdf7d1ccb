"""Admin enqueue: chosen image IDs ahead of the nightly work, on the chunk queue the command hands
in (the priority queue, or the worker in-process in embedded mode).

Rows are recorded `queued` idempotently (INSERT .. ON CONFLICT DO NOTHING .. RETURNING), and only
the rows this call created are sent, so enqueueing the same IDs again adds no row, no message and
no object. `force` queues rows already finished (done or failed) again and sends them too; they
keep their decision, scores and URIs until the worker records the new result over them.
Unknown IDs (not in the catalogue) are counted and left out.

Nothing is left half-done: when a send fails (the broker went away), the rows of every chunk not
sent are put back as they were (new rows removed, forced rows finished again, as before), the
run ends `failed` with the error, and the error goes up. Chunks sent before stay sent. Should
the database fail too, the unsent rows stay `queued` with their results, and the reaper sends
them once their message is overdue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from sqlalchemy import ColumnElement, and_, bindparam, delete, select, update
from sqlalchemy.orm import Session

from jewelcut.db import Image, Run, Segmentation, run_error, session_scope, utcnow
from jewelcut.logs import get_logger
from jewelcut.queue import ChunkQueue
from jewelcut.registry import active_model_version, ensure_registered
from jewelcut.settings import Settings
from jewelcut.sql import insert_ignore_statement

log = get_logger(__name__)
BATCH_SIZE = 5000  # IDs per database round trip
FINISHED = ("done", "failed")
# What queuing a finished row again changes, and so what putting it back restores.
REQUEUED_COLUMNS = ("status", "attempts", "run_id", "enqueued_at", "started_at")


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


@dataclass
class _Recorded:
    """One batch's rows to send, in order, and what sending them changed."""

    ids: list[str] = field(default_factory=list)
    created: set[str] = field(default_factory=set)  # new rows
    previous: dict[str, dict[str, object]] = field(default_factory=dict)  # forced: as they were


def enqueue_images(
    image_ids: Iterable[str],
    settings: Settings,
    queue: ChunkQueue,
    *,
    model_version: str | None = None,
    force: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> EnqueueSummary:
    """Record these images and send them to `queue`; `on_batch(n)` reports n more IDs handled."""
    model_version = model_version or active_model_version(settings)
    ensure_registered(model_version, settings)
    summary = EnqueueSummary(_start_run(model_version, force, settings), model_version)
    try:
        for batch in _batches(_unique(image_ids), BATCH_SIZE):
            _send(_record_batch(batch, summary, force, settings), queue, summary, settings)
            if on_batch:
                on_batch(len(batch))
    except BaseException as error:
        _end_run(summary, settings, error)
        raise
    _end_run(summary, settings)
    log.info("admin enqueue finished", extra=vars(summary))
    return summary


def _record_batch(
    batch: list[str], summary: EnqueueSummary, force: bool, settings: Settings
) -> _Recorded:
    """Insert this batch's rows (and queue finished ones again with force)."""
    summary.requested += len(batch)
    with session_scope(settings.resolved_database_url) as session:
        known = set(session.scalars(select(Image.id).where(Image.id.in_(batch))))
        summary.unknown += len(batch) - len(known)
        ids = [image_id for image_id in batch if image_id in known]
        created = _insert_queued(session, ids, summary) if ids else set()
        previous = _requeue_finished(session, ids, summary) if force and ids else {}
    summary.queued += len(created)
    summary.reset += len(previous)
    summary.already_recorded += len(ids) - len(created) - len(previous)
    to_send = [image_id for image_id in ids if image_id in created or image_id in previous]
    return _Recorded(to_send, created, previous)


def _send(
    recorded: _Recorded, queue: ChunkQueue, summary: EnqueueSummary, settings: Settings
) -> None:
    """Send the batch's chunks; when one fails, put back the rows not sent, then re-raise."""
    sent = 0
    try:
        for chunk in _batches(iter(recorded.ids), settings.chunk_size):
            queue.send(chunk, summary.model_version, summary.run_id)
            sent += len(chunk)
            summary.chunks += 1
    except BaseException:
        _put_back(recorded.ids[sent:], recorded, summary, settings)
        raise


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


def _requeue_finished(
    session: Session, ids: Sequence[str], summary: EnqueueSummary
) -> dict[str, dict[str, object]]:
    """Queue the finished rows among `ids` again, results kept; returns what each was."""
    finished = and_(
        Segmentation.model_version == summary.model_version,
        Segmentation.image_id.in_(ids),
        Segmentation.status.in_(FINISHED),
    )
    columns = [getattr(Segmentation, name) for name in REQUEUED_COLUMNS]
    query = select(Segmentation.image_id, *columns).where(finished).with_for_update()
    previous = {
        row[0]: dict(zip(REQUEUED_COLUMNS, row[1:], strict=True)) for row in session.execute(query)
    }
    if previous:
        session.execute(
            update(Segmentation)
            .where(finished)
            .values(
                status="queued",
                attempts=0,
                run_id=summary.run_id,
                enqueued_at=utcnow(),
                started_at=None,
            )
            .execution_options(synchronize_session=False)
        )
    return previous


def _put_back(
    image_ids: list[str], recorded: _Recorded, summary: EnqueueSummary, settings: Settings
) -> None:
    """The rows of unsent chunks as they were before this run, unless a worker has taken one."""
    created = [image_id for image_id in image_ids if image_id in recorded.created]
    forced = [image_id for image_id in image_ids if image_id in recorded.previous]
    try:
        with session_scope(settings.resolved_database_url) as session:
            if created:
                session.execute(delete(Segmentation).where(_untouched(summary, created)))
            if forced:
                _restore(session, summary, [{"b_id": i, **recorded.previous[i]} for i in forced])
    except Exception:
        log.exception(
            "unsent rows not put back; they stay queued, results kept, for the reaper",
            extra={"run_id": summary.run_id, "images": len(image_ids)},
        )
        return
    summary.queued -= len(created)
    summary.reset -= len(forced)
    log.warning(
        "admin enqueue failed part way: unsent rows put back",
        extra={"run_id": summary.run_id, "removed": len(created), "restored": len(forced)},
    )


def _untouched(summary: EnqueueSummary, image_ids: list[str]) -> ColumnElement[bool]:
    """This run's rows among `image_ids` that no worker has claimed."""
    return and_(
        Segmentation.model_version == summary.model_version,
        Segmentation.image_id.in_(image_ids),
        Segmentation.status == "queued",
        Segmentation.run_id == summary.run_id,
        Segmentation.attempts == 0,
    )


def _restore(session: Session, summary: EnqueueSummary, rows: list[dict[str, object]]) -> None:
    statement = (
        update(Segmentation.__table__)
        .where(
            Segmentation.model_version == summary.model_version,
            Segmentation.image_id == bindparam("b_id"),
            Segmentation.status == "queued",
            Segmentation.run_id == summary.run_id,
            Segmentation.attempts == 0,
        )
        .values({name: bindparam(name) for name in REQUEUED_COLUMNS})
    )
    session.connection().execute(statement, rows)


def _start_run(model_version: str, force: bool, settings: Settings) -> int:
    with session_scope(settings.resolved_database_url) as session:
        run = Run(kind="admin", model_version=model_version, options={"force": force})
        session.add(run)
        session.flush()
        return run.id


def _end_run(
    summary: EnqueueSummary, settings: Settings, error: BaseException | None = None
) -> None:
    """Finished, or failed with its error (kept to itself: the database may be what failed)."""
    try:
        with session_scope(settings.resolved_database_url) as session:
            run = session.get_one(Run, summary.run_id)
            run.status = "failed" if error else "finished"
            run.error = run_error(error) if error else None
            run.enqueued = summary.sent
            run.skipped = summary.already_recorded + summary.unknown
            run.chunks = summary.chunks
            run.finished_at = utcnow()
    except Exception:
        if error is None:
            raise
        log.exception("run not marked failed", extra={"run_id": summary.run_id})


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
