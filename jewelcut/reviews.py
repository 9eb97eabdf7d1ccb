"""Human review over the database: the sampling plan (the stored review queue), claims that
never hand one image to two reviewers, verdicts, the applied gates and the counts calibration
reads. Torch-free; the web app (review/) and the commands call these.

The plan samples, per model version: accepted images stratified by confidence band (each band
gets its share of the sample by population, and at least a few), plus rejected images just under
the gate (`low_confidence` within `near` of it: the ones a looser gate would let in). Each item
gets a random position, so the queue mixes strata in whatever order reviewers take it.

A claim takes free items with `SELECT .. FOR UPDATE SKIP LOCKED` (Postgres) and marks them in
the same transaction: two reviewers claiming at once get disjoint items. A claim lapses after
`review_claim_s` without a verdict.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from jewelcut.db import (
    FLAWS,
    VERDICTS,
    GateSetting,
    ModelVersion,
    Review,
    ReviewItem,
    Segmentation,
    session_scope,
    utcnow,
)
from jewelcut.precision import Calibration, calibrate
from jewelcut.retry import with_database_retries
from jewelcut.settings import Settings

# Bands over accepted confidences (the band view of 0004_reviews uses the same edges).
BANDS = (0.0, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
REJECTED_STRATUM = "rejected near gate"


class UnknownImage(LookupError):
    """No decided result for this image under this model version."""


@dataclass(frozen=True)
class Filters:
    """What a reviewer asked to see; None: anything."""

    decision: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    day: date | None = None  # UTC day of finished_at

    def where(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.decision:
            conditions.append(Segmentation.decision == self.decision)
        if self.min_confidence is not None:
            conditions.append(Segmentation.confidence >= self.min_confidence)
        if self.max_confidence is not None:
            conditions.append(Segmentation.confidence <= self.max_confidence)
        if self.day is not None:
            start = datetime.combine(self.day, time(), tzinfo=UTC)
            conditions.append(Segmentation.finished_at >= start)
            conditions.append(Segmentation.finished_at < start + timedelta(days=1))
        return conditions


# --- gates -------------------------------------------------------------------------------------


def applied_min_confidence(settings: Settings, model_version: str) -> float | None:
    """The version's applied gate threshold (latest `calibrate --apply`); None: the card's."""
    with session_scope(settings.resolved_database_url) as session:
        return session.scalars(
            select(GateSetting.min_confidence)
            .where(GateSetting.model_version == model_version)
            .order_by(GateSetting.applied_at.desc(), GateSetting.id.desc())
            .limit(1)
        ).first()


def apply_gate(
    settings: Settings,
    model_version: str,
    min_confidence: float,
    *,
    target_precision: float | None = None,
    precision_low: float | None = None,
    reviewed: int | None = None,
) -> None:
    with session_scope(settings.resolved_database_url) as session:
        session.add(
            GateSetting(
                model_version=model_version,
                min_confidence=min_confidence,
                target_precision=target_precision,
                precision_low=precision_low,
                reviewed=reviewed,
            )
        )


def card_gate(settings: Settings, model_version: str) -> tuple[float, float, float]:
    """(min_area, max_area, min_confidence) the version was registered with."""
    with session_scope(settings.resolved_database_url) as session:
        row = session.get(ModelVersion, model_version)
        if row is None:
            raise LookupError(f"model version {model_version!r} is not registered")
        return row.min_area, row.max_area, row.min_confidence


def current_min_confidence(settings: Settings, model_version: str) -> float:
    applied = applied_min_confidence(settings, model_version)
    return applied if applied is not None else card_gate(settings, model_version)[2]


# --- the sampling plan ----------------------------------------------------------------------


@dataclass
class PlanSummary:
    model_version: str
    gate: float
    added: dict[str, int] = field(default_factory=dict)  # stratum -> items added now
    planned: dict[str, int] = field(default_factory=dict)  # stratum -> items in the queue

    @property
    def total(self) -> int:
        return sum(self.planned.values())


def accepted_strata(gate: float) -> list[tuple[str, float, float]]:
    """(name, low, high) confidence bands at or above the gate; the last one closed."""
    edges = sorted({gate, *(edge for edge in BANDS if edge > gate)})
    return [
        (f"accepted {low:.3f}-{high:.3f}", low, high) for low, high in itertools.pairwise(edges)
    ]


def plan_reviews(
    settings: Settings,
    model_version: str,
    *,
    accepted: int = 200,
    rejected_share: float = 0.2,
    near: float = 0.05,
    seed: int | None = None,
) -> PlanSummary:
    """Top the version's review queue up to the plan (items already queued count; nothing is
    removed). Safe to run again."""
    gate = current_min_confidence(settings, model_version)
    summary = PlanSummary(model_version, gate)
    rng = random.Random(seed)
    decided = and_(Segmentation.model_version == model_version, Segmentation.status == "done")
    is_accepted = decided & (Segmentation.decision == "accepted")
    strata = [
        (name, is_accepted & _in_band(low, high, last=index == 0))
        for index, (name, low, high) in enumerate(reversed(accepted_strata(gate)))
    ]
    with session_scope(settings.resolved_database_url) as session:
        population = {name: _count(session, where) for name, where in strata}
        quotas = _quotas(population, accepted)
        near_gate = (
            decided
            & (Segmentation.reason == "low_confidence")
            & (Segmentation.confidence >= gate - near)
        )
        strata.append((REJECTED_STRATUM, near_gate))
        quotas[REJECTED_STRATUM] = round(accepted * rejected_share)
        for name, where in strata:
            have = _count_queued(session, model_version, name)
            image_ids = _sample(session, model_version, where, quotas[name] - have)
            _enqueue(session, model_version, name, image_ids, rng)
            summary.added[name] = len(image_ids)
            summary.planned[name] = have + len(image_ids)
    return summary


def _in_band(low: float, high: float, last: bool) -> ColumnElement[bool]:
    upper = Segmentation.confidence <= high if last else Segmentation.confidence < high
    return and_(Segmentation.confidence >= low, upper)


def _quotas(population: dict[str, int], size: int) -> dict[str, int]:
    """Each band's share of `size` by population, and at least a few where there are any."""
    total = sum(population.values())
    minimum = max(1, size // (2 * max(1, len(population))))
    return {
        name: min(count, max(minimum, round(size * count / total))) if total else 0
        for name, count in population.items()
    }


def _count(session: Session, where: ColumnElement[bool]) -> int:
    return int(session.scalar(select(func.count()).select_from(Segmentation).where(where)) or 0)


def _count_queued(session: Session, model_version: str, stratum: str) -> int:
    query = select(func.count()).where(
        ReviewItem.model_version == model_version, ReviewItem.stratum == stratum
    )
    return int(session.scalar(query) or 0)


def _sample(
    session: Session, model_version: str, where: ColumnElement[bool], count: int
) -> list[str]:
    if count <= 0:
        return []
    queued = select(ReviewItem.image_id).where(ReviewItem.model_version == model_version)
    query = (
        select(Segmentation.image_id)
        .where(where, Segmentation.image_id.not_in(queued))
        .order_by(func.random())
        .limit(count)
    )
    return list(session.scalars(query))


def _enqueue(
    session: Session, model_version: str, stratum: str, image_ids: list[str], rng: random.Random
) -> None:
    if not image_ids:
        return
    rows = [
        {
            "model_version": model_version,
            "image_id": image_id,
            "stratum": stratum,
            "position": rng.random(),
            "created_at": utcnow(),
        }
        for image_id in image_ids
    ]
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(ReviewItem).values(rows).on_conflict_do_nothing())


# --- claims and verdicts ---------------------------------------------------------------------


def claim(
    settings: Settings,
    model_version: str,
    reviewer: str,
    *,
    want: int = 5,
    filters: Filters | None = None,
) -> list[str]:
    """The reviewer's open items (theirs and not expired, renewed now), topped up to `want` with
    items nobody holds; in queue order. Retried while the database is unreachable."""
    return with_database_retries(
        lambda: _claim(settings, model_version, reviewer, want, filters or Filters())
    )


def _claim(
    settings: Settings, model_version: str, reviewer: str, want: int, filters: Filters
) -> list[str]:
    now = utcnow()
    expired = now - timedelta(seconds=settings.review_claim_s)
    open_items = and_(ReviewItem.model_version == model_version, ReviewItem.reviewed_at.is_(None))
    matching = [
        ReviewItem.image_id.in_(
            select(Segmentation.image_id).where(
                Segmentation.model_version == model_version, *filters.where()
            )
        )
    ]
    mine = open_items & (ReviewItem.claimed_by == reviewer) & (ReviewItem.claimed_at >= expired)
    free = open_items & or_(ReviewItem.claimed_at.is_(None), ReviewItem.claimed_at < expired)
    with session_scope(settings.resolved_database_url) as session:
        renewed = session.scalars(
            update(ReviewItem)
            .where(mine, *matching)
            .values(claimed_at=now)
            .returning(ReviewItem.image_id)
            .execution_options(synchronize_session=False)
        ).all()
        missing = want - len(renewed)
        if missing > 0:
            # Two statements: a LIMIT subquery inside the UPDATE may be rescanned and lock
            # more rows than asked. The UPDATE checks `free` again (SQLite has no row locks).
            takeable = session.scalars(
                select(ReviewItem.image_id)
                .where(free, *matching)
                .order_by(ReviewItem.position)
                .limit(missing)
                .with_for_update(skip_locked=True)
            ).all()
            session.execute(
                update(ReviewItem)
                .where(open_items, free, ReviewItem.image_id.in_(takeable))
                .values(claimed_by=reviewer, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
        held = select(ReviewItem.image_id).where(
            open_items, ReviewItem.claimed_by == reviewer, ReviewItem.claimed_at == now
        )
        return list(session.scalars(held.order_by(ReviewItem.position)))


def record_verdict(
    settings: Settings,
    model_version: str,
    image_id: str,
    reviewer: str,
    verdict: str,
    flaw: str | None = None,
) -> None:
    """Store a reviewer's verdict (a second one by the same reviewer replaces it) and close the
    image's queue item. Retried while the database is unreachable; safe to repeat."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    if flaw is not None and flaw not in FLAWS:
        raise ValueError(f"flaw must be one of {', '.join(FLAWS)}")
    if verdict == "clean":
        flaw = None
    with_database_retries(
        lambda: _record(settings, model_version, image_id, reviewer, verdict, flaw)
    )


def _record(
    settings: Settings,
    model_version: str,
    image_id: str,
    reviewer: str,
    verdict: str,
    flaw: str | None,
) -> None:
    now = utcnow()
    with session_scope(settings.resolved_database_url) as session:
        decided = session.scalar(
            select(func.count()).where(
                Segmentation.image_id == image_id,
                Segmentation.model_version == model_version,
                Segmentation.status == "done",
            )
        )
        if not decided:
            raise UnknownImage(f"no decided image {image_id!r} under {model_version!r}")
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        values = {
            "image_id": image_id,
            "model_version": model_version,
            "reviewer": reviewer,
            "verdict": verdict,
            "flaw": flaw,
            "reviewed_at": now,
        }
        statement = insert(Review).values(values)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["image_id", "model_version", "reviewer"],
                set_={key: statement.excluded[key] for key in ("verdict", "flaw", "reviewed_at")},
            )
        )
        session.execute(
            update(ReviewItem)
            .where(ReviewItem.model_version == model_version, ReviewItem.image_id == image_id)
            .values(reviewed_at=now, claimed_by=reviewer)
            .execution_options(synchronize_session=False)
        )


def verdict_of(
    settings: Settings, model_version: str, image_id: str, reviewer: str
) -> tuple[str, str | None] | None:
    with session_scope(settings.resolved_database_url) as session:
        row = session.execute(
            select(Review.verdict, Review.flaw).where(
                Review.model_version == model_version,
                Review.image_id == image_id,
                Review.reviewer == reviewer,
            )
        ).first()
        return None if row is None else (row.verdict, row.flaw)


def reviewed_by(settings: Settings, model_version: str, reviewer: str, limit: int) -> list[str]:
    """The reviewer's latest reviewed images, oldest first."""
    with session_scope(settings.resolved_database_url) as session:
        ids = session.scalars(
            select(Review.image_id)
            .where(Review.model_version == model_version, Review.reviewer == reviewer)
            .order_by(Review.reviewed_at.desc(), Review.id.desc())
            .limit(limit)
        ).all()
    return list(reversed(ids))


@dataclass(frozen=True)
class Progress:
    planned: int
    reviewed: int
    by_reviewer: int


def progress(settings: Settings, model_version: str, reviewer: str) -> Progress:
    with session_scope(settings.resolved_database_url) as session:
        in_version = ReviewItem.model_version == model_version
        planned = session.scalar(select(func.count()).where(in_version)) or 0
        reviewed = (
            session.scalar(
                select(func.count()).where(in_version, ReviewItem.reviewed_at.is_not(None))
            )
            or 0
        )
        mine = (
            session.scalar(
                select(func.count()).where(
                    Review.model_version == model_version, Review.reviewer == reviewer
                )
            )
            or 0
        )
    return Progress(int(planned), int(reviewed), int(mine))


# --- what calibration reads --------------------------------------------------------------------


def latest_verdicts(settings: Settings, model_version: str) -> list[tuple[float, float, bool]]:
    """(confidence, mask_area, clean) of every reviewed decided image: its latest verdict."""
    latest = (
        select(
            Review.image_id,
            Review.verdict,
            func.row_number()
            .over(
                partition_by=Review.image_id, order_by=(Review.reviewed_at.desc(), Review.id.desc())
            )
            .label("rank"),
        )
        .where(Review.model_version == model_version)
        .subquery()
    )
    query = (
        select(Segmentation.confidence, Segmentation.mask_area, latest.c.verdict)
        .join(latest, latest.c.image_id == Segmentation.image_id)
        .where(
            Segmentation.model_version == model_version,
            Segmentation.status == "done",
            latest.c.rank == 1,
        )
    )
    with session_scope(settings.resolved_database_url) as session:
        return [
            (float(confidence), float(area), verdict == "clean")
            for confidence, area, verdict in session.execute(query)
            if confidence is not None and area is not None
        ]


def accept_counts(
    settings: Settings,
    model_version: str,
    thresholds: Sequence[float],
    min_area: float,
    max_area: float,
) -> tuple[dict[float, int], int]:
    """How many decided images a gate at each threshold would accept, and how many were decided."""
    decided = and_(Segmentation.model_version == model_version, Segmentation.status == "done")
    in_area = and_(Segmentation.mask_area >= min_area, Segmentation.mask_area <= max_area)
    with session_scope(settings.resolved_database_url) as session:
        total = _count(session, decided)
        counts = {
            threshold: _count(session, decided & in_area & (Segmentation.confidence >= threshold))
            for threshold in thresholds
        }
    return counts, total


# --- calibration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateCalibration:
    model_version: str
    calibration: Calibration
    current_gate: float
    decided: int  # images decided so far under this version
    accepted_now: int  # of those, what the current gate accepts
    accepted_chosen: int | None  # what the calibrated gate would accept
    accepted_next_lower: int | None

    def rate(self, accepted: int | None) -> float | None:
        return None if accepted is None or not self.decided else accepted / self.decided


def calibrate_gate(
    settings: Settings, model_version: str, target_precision: float
) -> GateCalibration:
    """The lowest threshold whose Wilson lower bound on reviewed precision meets the target,
    from the latest verdicts, and the accept rates it and the current gate give on everything
    decided so far."""
    min_area, max_area, card_min_confidence = card_gate(settings, model_version)
    applied = applied_min_confidence(settings, model_version)
    current = applied if applied is not None else card_min_confidence
    eligible = [
        (confidence, clean)
        for confidence, area, clean in latest_verdicts(settings, model_version)
        if min_area <= area <= max_area
    ]
    result = calibrate(eligible, target_precision)
    chosen = result.chosen.threshold if result.chosen else None
    lower = result.next_lower.threshold if result.next_lower else None
    wanted = [t for t in (current, chosen, lower) if t is not None]
    counts, decided = accept_counts(settings, model_version, wanted, min_area, max_area)
    return GateCalibration(
        model_version=model_version,
        calibration=result,
        current_gate=current,
        decided=decided,
        accepted_now=counts[current],
        accepted_chosen=None if chosen is None else counts[chosen],
        accepted_next_lower=None if lower is None else counts[lower],
    )
