"""The nightly backfill: walk the catalogue, record `queued` rows and enqueue chunks.

The walk is keyset-paginated over images.id (never OFFSET): each page is a range scan of the
primary key after the cursor, left-joined to the segmentations row for the model version. An
image is to do when it has no row for that version (a new model version means reprocessing) or
when its row is still `queued` by this very run (a run that crashed after recording the row and
before sending it). Rows are inserted with ON CONFLICT DO NOTHING and committed before their
chunk is sent (embedded mode runs the task in-process, on the same database); the cursor in the
runs table moves only after the chunk is sent, so a crashed run, resumed, sends what it had not
sent and nothing it had. A redelivered chunk is harmless anyway: the worker skips done rows.

Backpressure: before each chunk the run waits while the bulk queue holds more than
settings.backfill_max_queued_chunks messages (0 turns it off).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, func, select, text, update
from sqlalchemy.engine import Engine

from jewelcut.db import Image, Run, Segmentation, get_engine, utcnow
from jewelcut.settings import Settings
from producer.queueing import ChunkQueue, bulk_queue
from producer.sql import insert_ignore_statement

log = logging.getLogger(__name__)

BACKPRESSURE_POLL_S = 1.0


class BackfillBusy(RuntimeError):
    """Another backfill for the same model version holds the lock."""


@dataclass(frozen=True)
class BackfillOptions:
    model_version: str | None = None  # None: the active model version
    limit: int | None = None  # enqueue at most this many images in this run
    since: datetime | None = None  # only images added to the catalogue since then
    dry_run: bool = False  # count what would be enqueued; write and send nothing


@dataclass
class BackfillResult:
    model_version: str
    run_id: int | None
    resumed_from: str | None  # the cursor a crashed run had reached, when this run resumed it
    scanned: int = 0
    enqueued: int = 0
    skipped: int = 0
    chunks: int = 0
    waited_s: float = 0.0
    seconds: float = 0.0
    cursor: str | None = None
    dry_run: bool = False

    @property
    def ids_per_s(self) -> float:
        return self.enqueued / self.seconds if self.seconds else 0.0


@dataclass
class _Page:
    ids: list[str]  # every image ID of the page, in key order
    todo: list[str]  # those to enqueue


def run_backfill(
    settings: Settings,
    options: BackfillOptions | None = None,
    queue: ChunkQueue | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_start: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """One backfill run (new, or the resumption of a crashed one). Returns its counts.

    `on_start(result)` is called once the run knows where it starts (result.cursor);
    `on_progress(n)`: n more catalogue images handled (sent in a chunk, or skipped)."""
    options = options or BackfillOptions()
    model_version = options.model_version or _active_model_version(settings)
    engine = get_engine(settings.resolved_database_url)
    if options.dry_run:
        return _dry_run(engine, settings, options, model_version, on_start, on_progress)
    queue = queue or bulk_queue(settings)
    _ensure_model_version(settings, model_version)
    with backfill_lock(engine, model_version):
        run_id, cursor = _start_or_resume(engine, model_version, options)
        result = BackfillResult(model_version, run_id, resumed_from=cursor, cursor=cursor)
        if on_start:
            on_start(result)
        started = time.perf_counter()
        try:
            _walk(engine, settings, options, queue, result, on_progress)
        except BaseException:
            _finish_run(engine, run_id, "failed")
            raise
        finally:
            result.seconds = time.perf_counter() - started
        _finish_run(engine, run_id, "finished")
    log.info(
        "backfill finished",
        extra={
            "run_id": run_id,
            "model_version": model_version,
            "enqueued": result.enqueued,
            "chunks": result.chunks,
            "skipped": result.skipped,
            "seconds": round(result.seconds, 3),
        },
    )
    return result


def _walk(
    engine: Engine,
    settings: Settings,
    options: BackfillOptions,
    queue: ChunkQueue,
    result: BackfillResult,
    on_progress: Callable[[int], None] | None,
) -> None:
    budget = options.limit
    for page in _pages(engine, settings.backfill_page_size, result, options.since):
        todo = page.todo if budget is None else page.todo[: budget - result.enqueued]
        if todo:
            _record_queued(engine, todo, result.model_version, result.run_id)
        handled = 0
        for chunk in _chunks(todo, settings.chunk_size):
            result.waited_s += _wait_for_room(queue, settings.backfill_max_queued_chunks)
            queue.send(chunk, result.model_version, result.run_id)
            _advance(engine, result, cursor=chunk[-1], enqueued=len(chunk), chunks=1)
            log.debug(
                "chunk enqueued",
                extra={
                    "run_id": result.run_id,
                    "chunk": result.chunks,
                    "first_image_id": chunk[0],
                    "last_image_id": chunk[-1],
                    "images": len(chunk),
                },
            )
            if on_progress:
                scanned_through = _count_through(page.ids, chunk[-1])
                on_progress(scanned_through - handled)
                handled = scanned_through
        limited = budget is not None and result.enqueued >= budget
        # A page cut short by the limit ends at its last enqueued image, not at the page's end.
        page_end = todo[-1] if limited and todo else page.ids[-1]
        scanned = _count_through(page.ids, page_end)
        _advance(engine, result, cursor=page_end, skipped=scanned - len(todo))
        result.scanned += scanned
        if on_progress and scanned > handled:
            on_progress(scanned - handled)
        if limited:
            return


def _pages(
    engine: Engine, page_size: int, result: BackfillResult, since: datetime | None
) -> Iterator[_Page]:
    """Keyset pages after result.cursor; the cursor is read again for every page."""
    while True:
        with engine.connect() as connection:
            rows = connection.execute(
                _page_query(result.model_version, result.cursor, page_size, since, result.run_id)
            ).all()
        if not rows:
            return
        yield _Page([row.id for row in rows], [row.id for row in rows if row.todo])
        if len(rows) < page_size:
            return


def _page_query(
    model_version: str,
    cursor: str | None,
    page_size: int,
    since: datetime | None,
    run_id: int | None,
) -> Select[tuple[str, bool]]:
    images = select(Image.id).order_by(Image.id).limit(page_size)
    if cursor is not None:
        images = images.where(Image.id > cursor)
    if since is not None:
        images = images.where(Image.created_at >= since)
    page = images.subquery("page")
    segmentation = Segmentation.__table__
    todo = segmentation.c.image_id.is_(None)
    if run_id is not None:  # rows this run recorded but may not have sent before it crashed
        todo = todo | and_(segmentation.c.status == "queued", segmentation.c.run_id == run_id)
    return (
        select(page.c.id, todo.label("todo"))
        .select_from(
            page.outerjoin(
                segmentation,
                and_(
                    segmentation.c.image_id == page.c.id,
                    segmentation.c.model_version == model_version,
                ),
            )
        )
        .order_by(page.c.id)
    )


def _record_queued(
    engine: Engine, image_ids: list[str], model_version: str, run_id: int | None
) -> None:
    now = utcnow()
    rows = [
        {
            "image_id": image_id,
            "model_version": model_version,
            "status": "queued",
            "attempts": 0,
            "run_id": run_id,
            "enqueued_at": now,
        }
        for image_id in image_ids
    ]
    with engine.begin() as connection:
        statement = insert_ignore_statement(
            connection, Segmentation.__table__, ["image_id", "model_version"]
        )
        connection.execute(statement, rows)


def _advance(
    engine: Engine,
    result: BackfillResult,
    cursor: str,
    enqueued: int = 0,
    chunks: int = 0,
    skipped: int = 0,
) -> None:
    """Commit the run's cursor and counts: everything up to `cursor` has been handled."""
    with engine.begin() as connection:
        connection.execute(
            update(Run)
            .where(Run.id == result.run_id)
            .values(
                cursor=cursor,
                enqueued=Run.enqueued + enqueued,
                chunks=Run.chunks + chunks,
                skipped=Run.skipped + skipped,
            )
        )
    result.cursor = cursor
    result.enqueued += enqueued
    result.chunks += chunks
    result.skipped += skipped


def _chunks(image_ids: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(image_ids), size):
        yield image_ids[start : start + size]


def _count_through(ids: list[str], last: str) -> int:
    """How many of the page's (sorted) ids are <= last."""
    return next((i for i in range(len(ids) - 1, -1, -1) if ids[i] <= last), -1) + 1


def _wait_for_room(queue: ChunkQueue, max_queued_chunks: int) -> float:
    """Block while the queue is over its bound; returns the seconds waited."""
    if max_queued_chunks <= 0 or (depth := queue.depth()) <= max_queued_chunks:
        return 0.0
    started = time.perf_counter()
    log.info("backpressure: waiting", extra={"queue_depth": depth, "bound": max_queued_chunks})
    while queue.depth() > max_queued_chunks:
        time.sleep(BACKPRESSURE_POLL_S)
    return time.perf_counter() - started


# --- runs: start, resume, finish -------------------------------------------------------------


def _start_or_resume(
    engine: Engine, model_version: str, options: BackfillOptions
) -> tuple[int, str | None]:
    """Resume the latest unfinished backfill of this version with the same filter, or start one."""
    recorded = _recorded_options(options)
    with engine.begin() as connection:
        unfinished = connection.execute(
            select(Run.id, Run.cursor, Run.options)
            .where(
                Run.kind == "backfill",
                Run.model_version == model_version,
                Run.status.in_(("running", "failed")),
            )
            .order_by(Run.id.desc())
            .limit(1)
        ).first()
        if unfinished and (unfinished.options or {}).get("since") == recorded.get("since"):
            connection.execute(
                update(Run)
                .where(Run.id == unfinished.id)
                .values(status="running", options={**(unfinished.options or {}), **recorded})
            )
            log.info(
                "backfill resumed",
                extra={"run_id": unfinished.id, "cursor": unfinished.cursor},
            )
            return unfinished.id, unfinished.cursor
        run_id = connection.execute(
            Run.__table__.insert()
            .values(
                kind="backfill",
                model_version=model_version,
                status="running",
                cursor=None,
                enqueued=0,
                skipped=0,
                chunks=0,
                options=recorded,
                started_at=utcnow(),
            )
            .returning(Run.id)
        ).scalar_one()
    log.info("backfill started", extra={"run_id": run_id, "model_version": model_version})
    return run_id, None


def _recorded_options(options: BackfillOptions) -> dict[str, object]:
    return {
        "limit": options.limit,
        "since": options.since.isoformat() if options.since else None,
    }


def _finish_run(engine: Engine, run_id: int | None, status: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(Run).where(Run.id == run_id).values(status=status, finished_at=utcnow())
        )


@contextmanager
def backfill_lock(engine: Engine, model_version: str) -> Iterator[None]:
    """One backfill per model version at a time. On Postgres a session advisory lock, released by
    the server when the holder dies, so a killed run never blocks the next one. SQLite (one
    machine, embedded) needs none."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = int.from_bytes(hashlib.sha256(f"backfill:{model_version}".encode()).digest()[:8], "big")
    key -= 1 << 63 if key >= 1 << 63 else 0  # a signed bigint
    with engine.connect() as connection:
        if not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            raise BackfillBusy(f"another backfill for model version {model_version} is running")
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


# --- dry run and helpers ---------------------------------------------------------------------


def _dry_run(
    engine: Engine,
    settings: Settings,
    options: BackfillOptions,
    model_version: str,
    on_start: Callable[[BackfillResult], None] | None,
    on_progress: Callable[[int], None] | None,
) -> BackfillResult:
    result = BackfillResult(model_version, run_id=None, resumed_from=None, dry_run=True)
    if on_start:
        on_start(result)
    started = time.perf_counter()
    for page in _pages(engine, settings.backfill_page_size, result, options.since):
        todo = page.todo
        if options.limit is not None:
            todo = todo[: options.limit - result.enqueued]
        result.enqueued += len(todo)
        result.chunks += -(-len(todo) // settings.chunk_size)
        result.scanned += len(page.ids)
        result.skipped += len(page.ids) - len(page.todo)
        result.cursor = page.ids[-1]
        if on_progress:
            on_progress(len(page.ids))
        if options.limit is not None and result.enqueued >= options.limit:
            break
    result.seconds = time.perf_counter() - started
    return result


def catalogue_size(
    settings: Settings, after: str | None = None, since: datetime | None = None
) -> int:
    """Images a run will scan (for the progress bar)."""
    query = select(func.count()).select_from(Image)
    if after is not None:
        query = query.where(Image.id > after)
    if since is not None:
        query = query.where(Image.created_at >= since)
    with get_engine(settings.resolved_database_url).connect() as connection:
        return int(connection.execute(query).scalar_one())


def _active_model_version(settings: Settings) -> str:
    from worker.registry import active_model_version

    return active_model_version(settings)


def _ensure_model_version(settings: Settings, model_version: str) -> None:
    """The segmentations rows refer to the model_versions row: make sure it is there."""
    from worker.registry import ensure_registered

    ensure_registered(model_version, settings)
