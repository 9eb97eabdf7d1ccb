"""The nightly backfill: walk the catalogue, record `queued` rows and enqueue chunks.

The walk is keyset-paginated over images.id (never OFFSET): each page is a range scan of the
primary key after the cursor, with one primary-key probe of segmentations per image. An image
is to do when it has no row for the model version (a new version means reprocessing) or when
its row is still `queued` by this very run (recorded, then the run crashed before sending it).
A page's rows are inserted with ON CONFLICT DO NOTHING and committed before its chunks are sent
(embedded mode runs the task in-process, on the same database), one page ahead in a background
thread. The cursor in the runs table moves only after a chunk is sent, so a crashed run,
resumed, sends what it had not sent and nothing it had. A redelivered chunk is harmless anyway:
the worker skips done rows and rows another delivery holds.

A run that fails part way (the broker went away) ends `failed` with its error. It erases no
result (it only inserts rows for images that have none); the rows it recorded and did not send
stay `queued`: the next backfill resumes the run and sends them, and the reaper sends them once
their message is overdue.

Backpressure: before each chunk the run waits while the bulk queue holds more than
settings.backfill_max_queued_chunks messages (0 turns it off).
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, case, func, literal, select, text, update
from sqlalchemy.engine import Connection, Engine

from jewelcut.db import Image, Run, Segmentation, get_engine, run_error, utcnow
from jewelcut.logs import get_logger
from jewelcut.queue import ChunkQueue
from jewelcut.registry import active_model_version, ensure_registered
from jewelcut.settings import Settings
from jewelcut.sql import insert_ignore_many

log = get_logger(__name__)

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
    todo: list[str]  # those to enqueue (already recorded as queued, unless a dry run)
    end: str  # the page counts as handled through this ID (its last, or where the limit hit)
    last: bool  # no page follows: the catalogue or the limit ends here

    @property
    def scanned(self) -> int:
        return bisect_right(self.ids, self.end)


def run_backfill(
    settings: Settings,
    options: BackfillOptions | None = None,
    *,
    queue: ChunkQueue,
    on_progress: Callable[[int], None] | None = None,
    on_start: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """One backfill run (new, or the resumption of a crashed one). Returns its counts.

    `on_start(result)` is called once the run knows where it starts (result.cursor);
    `on_progress(n)`: n more catalogue images handled (sent in a chunk, or skipped)."""
    options = options or BackfillOptions()
    model_version = options.model_version or active_model_version(settings)
    engine = get_engine(settings.resolved_database_url)
    if options.dry_run:
        return _dry_run(engine, settings, options, model_version, on_start, on_progress)
    ensure_registered(model_version, settings)  # the rows refer to its model_versions row
    with backfill_lock(engine, model_version) as run_connection:
        run_id, cursor = _start_or_resume(engine, model_version, options)
        result = BackfillResult(model_version, run_id, resumed_from=cursor, cursor=cursor)
        if on_start:
            on_start(result)
        started = time.perf_counter()
        try:
            _walk(engine, run_connection, settings, options, queue, result, on_progress)
        except BaseException as error:
            with suppress(Exception):  # the database may be what failed: keep the first error
                _finish_run(engine, run_id, "failed", run_error(error))
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
    run_connection: Connection,
    settings: Settings,
    options: BackfillOptions,
    queue: ChunkQueue,
    result: BackfillResult,
    on_progress: Callable[[int], None] | None,
) -> None:
    with _Pager(engine, settings.backfill_page_size, options, result, record=True) as pager:
        for page in pager:
            handled = 0
            for chunk in _chunks(page.todo, settings.chunk_size):
                result.waited_s += _wait_for_room(queue, settings.backfill_max_queued_chunks)
                queue.send(chunk, result.model_version, result.run_id)
                _advance(run_connection, result, cursor=chunk[-1], enqueued=len(chunk), chunks=1)
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
                    through = bisect_right(page.ids, chunk[-1])
                    on_progress(through - handled)
                    handled = through
            _advance(run_connection, result, cursor=page.end, skipped=page.scanned - len(page.todo))
            result.scanned += page.scanned
            if on_progress and page.scanned > handled:
                on_progress(page.scanned - handled)


class _Pager:
    """Keyset pages after the run's cursor, each read and (unless a dry run) recorded as queued
    one page ahead, in a background thread, while the caller sends the page before: the
    database's insert work overlaps the sending. Rows recorded ahead and never sent (a crash)
    carry this run's id, so the resumed run sends them."""

    def __init__(
        self,
        engine: Engine,
        page_size: int,
        options: BackfillOptions,
        result: BackfillResult,
        record: bool,
    ) -> None:
        self.engine = engine
        self.page_size = page_size
        self.since = options.since
        self.model_version = result.model_version
        self.run_id = result.run_id
        self.start = result.cursor
        self.remaining = options.limit  # images still to enqueue under --limit
        self.record = record
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="backfill-pager")

    def __enter__(self) -> _Pager:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.executor.shutdown(wait=True)  # a page being recorded is finished, never torn

    def __iter__(self) -> Iterator[_Page]:
        upcoming: Future[_Page | None] = self.executor.submit(self._prepare, self.start)
        while (page := upcoming.result()) is not None:
            if not page.last:
                upcoming = self.executor.submit(self._prepare, page.ids[-1])
            yield page
            if page.last:
                return

    def _prepare(self, after: str | None) -> _Page | None:
        query = _page_query(self.model_version, after, self.page_size, self.since, self.run_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        if not rows:
            return None
        ids = [row.id for row in rows]
        todo = [row.id for row in rows if row.todo]
        last = len(rows) < self.page_size
        end = ids[-1]
        if self.remaining is not None:
            if len(todo) >= self.remaining:  # the limit ends the run within this page
                todo, last = todo[: self.remaining], True
                end = todo[-1] if todo else end
            self.remaining -= len(todo)
        if todo and self.record:
            _record_queued(self.engine, todo, self.model_version, self.run_id)
        return _Page(ids, todo, end, last)


def _page_query(
    model_version: str,
    cursor: str | None,
    page_size: int,
    since: datetime | None,
    run_id: int | None,
) -> Select[tuple[str, bool]]:
    """The page's image IDs and whether each is to do.

    An image is to do when the correlated scalar subquery finds no row for the version (NULL),
    or finds one that this run queued itself (1). A scalar subquery is probed per image through
    the segmentations primary key whatever the table's size or statistics; a join or EXISTS let
    the planner hash all of the version's rows for every page (quadratic over a night's run)."""
    images = select(Image.id).order_by(Image.id).limit(page_size)
    if cursor is not None:
        images = images.where(Image.id > cursor)
    if since is not None:
        images = images.where(Image.created_at >= since)
    page = images.subquery("page")
    segmentation = Segmentation.__table__.c
    ours = literal(0)
    if run_id is not None:  # rows this run recorded but may not have sent before it crashed
        queued_by_us = and_(segmentation.status == "queued", segmentation.run_id == run_id)
        ours = case((queued_by_us, 1), else_=0)
    state = (
        select(ours)
        .where(segmentation.image_id == page.c.id, segmentation.model_version == model_version)
        .scalar_subquery()
    )
    return select(page.c.id, (func.coalesce(state, 1) == 1).label("todo")).order_by(page.c.id)


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
        insert_ignore_many(connection, Segmentation.__table__, ["image_id", "model_version"], rows)


def _advance(
    run_connection: Connection,
    result: BackfillResult,
    cursor: str,
    enqueued: int = 0,
    chunks: int = 0,
    skipped: int = 0,
) -> None:
    """Commit the run's cursor and counts: everything up to `cursor` has been handled."""
    run_connection.execute(
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


def _finish_run(engine: Engine, run_id: int | None, status: str, error: str | None = None) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status=status, error=error, finished_at=utcnow())
        )


@contextmanager
def backfill_lock(engine: Engine, model_version: str) -> Iterator[Connection]:
    """The run's own connection, in autocommit, that writes its cursor and holds its lock.

    One backfill per model version at a time: on Postgres a session advisory lock, released by
    the server when its holder dies, so a killed run never blocks the next one (SQLite, one
    machine, needs none). Cursor commits on Postgres do not wait for the disk: a cursor lost in
    a server crash only means its last chunks are sent again, which the worker shrugs off."""
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        if engine.dialect.name != "postgresql":
            yield connection
            return
        key = _lock_key(f"backfill:{model_version}")
        if not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            raise BackfillBusy(f"another backfill for model version {model_version} is running")
        connection.execute(text("SET synchronous_commit TO OFF"))
        try:
            yield connection
        finally:
            connection.execute(text("RESET synchronous_commit"))
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


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
    with _Pager(engine, settings.backfill_page_size, options, result, record=False) as pager:
        for page in pager:
            result.enqueued += len(page.todo)
            result.chunks += -(-len(page.todo) // settings.chunk_size)
            result.scanned += page.scanned
            result.skipped += page.scanned - len(page.todo)
            result.cursor = page.end
            if on_progress:
                on_progress(page.scanned)
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
