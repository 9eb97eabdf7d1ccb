"""One chunk of image IDs under one model version: claim, segment, write, record.

Plain functions over the database, storage and the pipeline, so they are testable without a
broker. The order makes redelivery and concurrent delivery safe:

1. claim, in one transaction: rows still `queued` (or `processing` past the processing timeout:
   their worker died) become `processing`; a row another delivery has claimed, or one already
   `done`, is not returned, so no image is processed twice at once. A claimable row that has
   already been tried `max_attempts` times ends `failed` (too_many_attempts) instead;
2. stream the first-time images (attempts 0 -> 1 at claim) through
   worker.pipeline.process_stream (fetch -> decode -> Unet -> cleanup -> gate -> cutout + preview
   uploaded to deterministic keys, so a retry overwrites), then one bulk upsert of the outcomes;
3. then the retried images (an earlier delivery started them and never recorded a result: its
   process may have died on one of them) one at a time, each counting its attempt just before
   it runs and recorded just after, so a poison image that kills the process takes down only
   itself, and ends failed after max_attempts while the rest of its chunk completes (with
   chunks in flight, nothing else of this process runs meanwhile: RETRIED_ALONE). A retried
   image that waited past the processing timeout for its turn may have been sent again by the
   reaper meanwhile: it is taken back and counted all the same (it never runs uncounted), unless
   another delivery has claimed or finished it, and then it is skipped here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from jewelcut import metrics
from jewelcut.db import (
    RESULT_COLUMNS,
    TOO_MANY_ATTEMPTS,
    Image,
    Segmentation,
    given_up_values,
    session_scope,
    utcnow,
)
from jewelcut.logs import get_logger, log_context
from jewelcut.retry import with_database_retries
from jewelcut.settings import Settings, get_settings
from jewelcut.sources import fetch_source
from jewelcut.sql import upsert_statement
from jewelcut.storage import (
    Storage,
    cutout_key,
    get_storage,
    mask_key,
    preview_key,
    probability_key,
)

if TYPE_CHECKING:
    from worker.pipeline import ImageOutcome, Photo, Prediction, Segmenter

UPSERTED_COLUMNS = ("status", *RESULT_COLUMNS)
log = get_logger(__name__)
T = TypeVar("T")


@dataclass
class ChunkSummary:
    chunk_id: str
    model_version: str
    requested: int
    claimed: int = 0
    retried: int = 0  # claimed again after an earlier delivery died on them: run one at a time
    done: int = 0
    failed: int = 0
    accepted: int = 0
    skipped: int = 0  # already done, claimed elsewhere, or unknown
    seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """What one delivery of a chunk took: {image_id: source_uri} of every claimed image, the
    first-time ones and the retried ones (least-tried first), and the rows it gave up on."""

    sources: dict[str, str]
    fresh: list[str]
    retried: list[str]
    gave_up: list[str]
    claimed_at: datetime


def run_chunk(
    image_ids: Sequence[str],
    model_version: str,
    *,
    run_id: int | None = None,
    chunk_id: str | None = None,
    settings: Settings | None = None,
) -> ChunkSummary:
    """Process one chunk end to end; safe to call again with the same arguments."""
    settings = settings or get_settings()
    chunk_id = chunk_id or uuid.uuid4().hex
    started = time.perf_counter()
    summary = ChunkSummary(chunk_id, model_version, requested=len(image_ids))
    with log_context(chunk_id=chunk_id, model_version=model_version):
        # The model first: a worker that cannot load it must not claim (and strand) any rows.
        segmenter = get_segmenter(model_version, settings)
        segmenter = with_database_retries(lambda: gated(segmenter, model_version, settings))
        # One claim time for every try: a retry re-takes the rows of a commit it did not see.
        claimed_at = utcnow()
        with RETRIED_ALONE.shared():  # the claim and the first-time images: beside other chunks
            claim = with_database_retries(
                lambda: claim_chunk(image_ids, model_version, settings, claimed_at=claimed_at)
            )
            outcomes = segment_fresh(segmenter, claim, model_version, settings)
        outcomes += segment_retried(segmenter, claim, model_version, settings)
        summary.claimed, summary.retried = len(claim.sources), len(claim.retried)
        summary.skipped = len(set(image_ids)) - len(claim.sources) - len(claim.gave_up)
        _count_gave_up(summary, claim.gave_up)
        _count(summary, outcomes)
        summary.seconds = time.perf_counter() - started
        metrics.CHUNK_SECONDS.observe(summary.seconds)
        metrics.CHUNKS.labels("processed" if summary.claimed else "skipped").inc()
        metrics.record_gpu_memory()
        counts = {k: v for k, v in vars(summary).items() if k not in ("chunk_id", "model_version")}
        log.info("chunk finished", extra=counts)
    return summary


def segment_fresh(
    segmenter: Segmenter, claim: Claim, model_version: str, settings: Settings
) -> list[ImageOutcome]:
    """The first-time images as one stream, recorded as soon as it ends."""
    outcomes: list[ImageOutcome] = []
    fresh = {image_id: claim.sources[image_id] for image_id in claim.fresh}
    _process_and_record(segmenter, model_version, settings, outcomes, fresh)
    return outcomes


def segment_retried(
    segmenter: Segmenter, claim: Claim, model_version: str, settings: Settings
) -> list[ImageOutcome]:
    """Each retried image alone, in this process too (RETRIED_ALONE), recorded at once."""
    outcomes: list[ImageOutcome] = []
    process = partial(_process_and_record, segmenter, model_version, settings, outcomes)
    for image_id in claim.retried:
        with RETRIED_ALONE.exclusive():
            count = partial(count_attempt, image_id, model_version, settings, claim.claimed_at)
            if with_database_retries(count):
                process({image_id: claim.sources[image_id]})
            else:
                log.info(
                    "retried image skipped: claimed or finished elsewhere",
                    extra={"image_id": image_id},
                )
    return outcomes


class AloneLock:
    """Shared by the chunks a worker runs at once (chunks_in_flight), exclusive for a retried
    image: a poison image that kills the process must take down only itself, so while a retried
    image runs, no other chunk of this process claims or streams anything. Waiting exclusive
    holders go first, so the retried images are not starved by a stream of fresh chunks."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sharing = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive and not self._waiting_exclusive)
            self._sharing += 1
        try:
            yield
        finally:
            with self._condition:
                self._sharing -= 1
                self._condition.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._waiting_exclusive += 1
            self._condition.wait_for(lambda: not self._exclusive and not self._sharing)
            self._waiting_exclusive -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


RETRIED_ALONE = AloneLock()


def _process_and_record(
    segmenter: Segmenter,
    model_version: str,
    settings: Settings,
    outcomes: list[ImageOutcome],
    sources: dict[str, str],
) -> None:
    """Segment these images and record their outcomes (appended to `outcomes`)."""
    finished: list[ImageOutcome] = []
    try:
        finished.extend(segment_images(segmenter, sources, model_version, settings))
    finally:
        # Even when the stream broke off: keep what finished; the reaper requeues the rest.
        threshold = segmenter.thresholds.min_confidence
        with_database_retries(
            lambda: record_outcomes(finished, model_version, settings, min_confidence=threshold)
        )
        outcomes.extend(finished)


def claim_images(
    image_ids: Sequence[str], model_version: str, settings: Settings
) -> dict[str, str]:
    """Claim the chunk's claimable rows to run them all together, counting every attempt now;
    returns {image_id: source_uri} of those."""
    return claim_chunk(image_ids, model_version, settings, count_retried=True).sources


def claim_chunk(
    image_ids: Sequence[str],
    model_version: str,
    settings: Settings,
    *,
    count_retried: bool = False,
    claimed_at: datetime | None = None,
) -> Claim:
    """One transaction: give up on rows tried max_attempts times, then mark the others
    `processing`. First-time rows count their attempt here; retried rows count theirs when
    each runs alone (count_attempt), or here too with `count_retried`. Rows already marked
    `processing` at `claimed_at` are this claim's own (a commit whose reply was lost): they are
    taken again, as first-time rows, without counting another attempt."""
    ids = list(set(image_ids))
    now = claimed_at or utcnow()
    claimable = _claimable(model_version, ids, now, settings)
    ours = and_(
        Segmentation.model_version == model_version,
        Segmentation.image_id.in_(ids),
        _claimed_at(now),
    )
    tried_enough = Segmentation.attempts >= settings.max_attempts
    retry_count = {"attempts": Segmentation.attempts + 1} if count_retried else {}
    give_up = _give_up(claimable & tried_enough, settings.max_attempts, now)
    take_fresh = _mark_processing(claimable & (Segmentation.attempts == 0), now, attempts=1)
    take_retried = _mark_processing(
        claimable & (Segmentation.attempts > 0) & ~tried_enough, now, **retry_count
    )
    with session_scope(settings.resolved_database_url) as session:
        retaken = sorted(session.scalars(select(Segmentation.image_id).where(ours)))
        gave_up = sorted(session.scalars(give_up))
        fresh = sorted([*session.scalars(take_fresh), *retaken])
        retried = [image_id for image_id, _ in sorted(session.execute(take_retried), key=_fewest)]
        sources = _source_uris(session, fresh + retried)
    return Claim(sources, fresh, retried, gave_up, now)


def _claimed_at(when: datetime) -> ColumnElement[bool]:
    """Rows a claim at `when` marked `processing` and nobody has taken since."""
    return and_(Segmentation.status == "processing", Segmentation.started_at == when)


def _give_up(where: ColumnElement[bool], max_attempts: int, now: datetime) -> Any:
    return (
        update(Segmentation)
        .where(where)
        .values(**given_up_values(max_attempts, now))
        .returning(Segmentation.image_id)
        .execution_options(synchronize_session=False)
    )


def _source_uris(session: Session, image_ids: list[str]) -> dict[str, str]:
    if not image_ids:
        return {}
    rows = session.execute(select(Image.id, Image.source_uri).where(Image.id.in_(image_ids)))
    return {image_id: source_uri for image_id, source_uri in rows}


def _claimable(
    model_version: str, image_ids: list[str], now: datetime, settings: Settings
) -> ColumnElement[bool]:
    stale = now - timedelta(seconds=settings.processing_timeout_s)
    return and_(
        Segmentation.model_version == model_version,
        Segmentation.image_id.in_(image_ids),
        or_(
            Segmentation.status == "queued",
            (Segmentation.status == "processing") & (Segmentation.started_at < stale),
        ),
    )


def _mark_processing(where: ColumnElement[bool], now: datetime, **values: Any) -> Any:
    return (
        update(Segmentation)
        .where(where)
        .values(status="processing", started_at=now, **values)
        .returning(Segmentation.image_id, Segmentation.attempts)
        .execution_options(synchronize_session=False)
    )


def _fewest(row: Any) -> tuple[int, str]:
    image_id, attempts = row
    return attempts, image_id


def count_attempt(
    image_id: str, model_version: str, settings: Settings, claimed_at: datetime
) -> bool:
    """A retried image is about to run (alone): count the attempt before it can crash us.

    The row is still this delivery's while it is `processing` since `claimed_at`; if it waited
    past the processing timeout, the reaper may have queued it again: it is taken back (its new
    message will find it running or finished). False when another delivery has claimed it or
    it has finished: then it must not run here."""
    ours_or_requeued = or_(_claimed_at(claimed_at), Segmentation.status == "queued")
    statement = (
        update(Segmentation)
        .where(
            Segmentation.image_id == image_id,
            Segmentation.model_version == model_version,
            ours_or_requeued,
        )
        .values(status="processing", attempts=Segmentation.attempts + 1, started_at=utcnow())
        .returning(Segmentation.image_id)
        .execution_options(synchronize_session=False)
    )
    with session_scope(settings.resolved_database_url) as session:
        return session.execute(statement).first() is not None


def segment_images(
    segmenter: Segmenter, sources: dict[str, str], model_version: str, settings: Settings
) -> Iterator[ImageOutcome]:
    """Stream the images through the pipeline; one outcome per image as it finishes, failures
    included."""
    from worker.pipeline import Writer, process_stream

    storage = get_storage(settings)

    def read(image_id: str) -> bytes:
        return fetch_source(sources[image_id], settings)

    write = Writer(render_artifacts, partial(store_artifacts, storage, model_version))
    if not sources:
        return
    for outcome in process_stream(segmenter, list(sources), read, write, settings.io_threads):
        metrics.record_outcome(outcome)
        if outcome.status == "failed":
            log.warning(
                "image failed",
                extra={"image_id": outcome.key, "reason": outcome.reason, "error": outcome.error},
            )
        yield outcome


def render_artifacts(photo: Photo, prediction: Prediction) -> dict[str, bytes]:
    """Everything written for a decided image: its scores as images (render_scores) and what a
    person is shown (render_cutout). Runs in a CPU-stage process when there is a pool."""
    return render_scores(prediction) | render_cutout(photo, prediction)


def render_scores(prediction: Prediction) -> dict[str, bytes]:
    """The cleaned mask and probability map at network resolution: what a reviewer sees and
    what `jewelcut regate` redraws a cutout from."""
    from worker.cutout import encode_mask_png, encode_probability_png

    return {
        "mask": encode_mask_png(prediction.mask),
        "probability": encode_probability_png(prediction.probability),
    }


def render_cutout(photo: Photo, prediction: Prediction) -> dict[str, bytes]:
    """The cutout PNG (accepted only: the one photo decoded at full size) and the preview JPEG
    a person is shown."""
    from worker.cutout import encode_cutout_and_preview, encode_preview_jpeg

    if not prediction.accepted:
        return {"preview": encode_preview_jpeg(photo.reduced, None)}
    alpha = prediction.alpha(photo.height, photo.width)
    cutout, preview = encode_cutout_and_preview(photo.rgb, alpha)
    return {"cutout": cutout, "preview": preview}


def store_artifacts(
    storage: Storage, model_version: str, image_id: str, rendered: dict[str, bytes]
) -> dict[str, str]:
    """Upload what render_artifacts made to its deterministic keys; returns their URIs."""
    artifacts: dict[str, str] = {}
    if "mask" in rendered:
        key = mask_key(model_version, image_id)
        artifacts["mask_uri"] = storage.put(key, rendered["mask"], "image/png")
    if "probability" in rendered:
        key = probability_key(model_version, image_id)
        artifacts["probability_uri"] = storage.put(key, rendered["probability"], "image/png")
    if "cutout" in rendered:
        key = cutout_key(model_version, image_id)
        artifacts["cutout_uri"] = storage.put(key, rendered["cutout"], "image/png")
    key = preview_key(model_version, image_id)
    artifacts["preview_uri"] = storage.put(key, rendered["preview"], "image/jpeg")
    return artifacts


def write_artifacts(
    storage: Storage, model_version: str, image_id: str, photo: Photo, prediction: Prediction
) -> dict[str, str]:
    """Render and upload the cutout (accepted only) and the preview; returns their URIs."""
    return store_artifacts(storage, model_version, image_id, render_artifacts(photo, prediction))


def record_outcomes(
    outcomes: Sequence[ImageOutcome],
    model_version: str,
    settings: Settings,
    *,
    min_confidence: float | None = None,
) -> None:
    """One bulk upsert of the chunk's results; `min_confidence` is the gate they were decided
    with."""
    if not outcomes:
        return
    finished_at = utcnow()
    rows = [
        _result_row(outcome, model_version, finished_at, min_confidence) for outcome in outcomes
    ]
    with session_scope(settings.resolved_database_url) as session:
        statement = upsert_statement(
            session.connection(),
            Segmentation.__table__,
            ("image_id", "model_version"),
            UPSERTED_COLUMNS,
        )
        session.execute(statement.values(rows))


def _result_row(
    outcome: ImageOutcome, model_version: str, finished_at: Any, min_confidence: float | None
) -> dict[str, Any]:
    decided = outcome.status == "done"
    return {
        "image_id": outcome.key,
        "model_version": model_version,
        "status": outcome.status,
        "decision": outcome.decision,
        "reason": outcome.reason,
        "confidence": outcome.confidence,
        "fg_score": outcome.fg_score,
        "bg_score": outcome.bg_score,
        "mask_area": outcome.mask_area,
        "width": outcome.width,
        "height": outcome.height,
        "cutout_uri": outcome.artifacts.get("cutout_uri"),
        "preview_uri": outcome.artifacts.get("preview_uri"),
        "mask_uri": outcome.artifacts.get("mask_uri"),
        "probability_uri": outcome.artifacts.get("probability_uri"),
        "gate_min_confidence": min_confidence if decided else None,
        "error": outcome.error,
        "finished_at": finished_at,
        "timings": {stage: round(seconds, 6) for stage, seconds in outcome.timings.items()},
    }


def _count(summary: ChunkSummary, outcomes: Sequence[ImageOutcome]) -> None:
    for outcome in outcomes:
        if outcome.status == "done":
            summary.done += 1
            summary.accepted += outcome.decision == "accepted"
        else:
            summary.failed += 1
            reason = outcome.reason or "unknown"
            summary.failures[reason] = summary.failures.get(reason, 0) + 1


def _count_gave_up(summary: ChunkSummary, image_ids: Sequence[str]) -> None:
    if not image_ids:
        return
    summary.failed += len(image_ids)
    summary.failures[TOO_MANY_ATTEMPTS] = len(image_ids)
    metrics.IMAGES.labels("failed", TOO_MANY_ATTEMPTS).inc(len(image_ids))
    for image_id in image_ids:
        log.warning(
            "image failed: too many attempts",
            extra={"image_id": image_id, "reason": TOO_MANY_ATTEMPTS},
        )


# --------------------------------------------------------------- one Segmenter per process ---

_segmenters: dict[tuple[str, ...], Segmenter] = {}
_segmenters_lock = threading.Lock()


def gated(segmenter: Segmenter, model_version: str, settings: Settings) -> Segmenter:
    """The segmenter deciding with the version's applied gate (`jewelcut calibrate --apply`),
    or with its card's when none was applied."""
    from dataclasses import replace

    from jewelcut.reviews import applied_min_confidence

    min_confidence = applied_min_confidence(settings, model_version)
    if min_confidence is None:
        return segmenter
    card_gate = segmenter.card.gate.thresholds()
    return segmenter.with_gate(replace(card_gate, min_confidence=min_confidence))


def get_segmenter(model_version: str, settings: Settings) -> Segmenter:
    """The process's Segmenter for this version, loaded once (lazily), not per chunk."""
    from jewelcut.registry import resolve_model_dir
    from worker.pipeline import Segmenter

    cache_key = (model_version, str(settings.models_dir), settings.device, settings.backend)
    with _segmenters_lock:
        segmenter = _segmenters.get(cache_key)
        if segmenter is None:
            model_dir = resolve_model_dir(model_version, settings)
            segmenter = Segmenter.from_settings(settings, model_dir)
            segmenter.load()
            _segmenters[cache_key] = segmenter
            log.info("model loaded", extra={"model_dir": str(model_dir)})
        return segmenter
