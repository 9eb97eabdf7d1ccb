"""The schema (SQLAlchemy 2 typed models) and the session factory.

Postgres is the source of truth: one `segmentations` row per (image, model version) says what
happened to that image under that model. Alembic migrations (migrations/) create these tables;
keep the two in step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

STATUSES = ("queued", "processing", "done", "failed")
UNFINISHED = ("queued", "processing")
# What a worker records about one image (besides its status). A row queued again keeps them
# until its new result (or failure) is recorded over them.
RESULT_COLUMNS = (
    "decision",
    "reason",
    "confidence",
    "fg_score",
    "bg_score",
    "mask_area",
    "width",
    "height",
    "cutout_uri",
    "preview_uri",
    "mask_uri",
    "probability_uri",
    "gate_min_confidence",
    "error",
    "finished_at",
    "timings",
)


TOO_MANY_ATTEMPTS = "too_many_attempts"


def utcnow() -> datetime:
    return datetime.now(UTC)


def given_up_values(max_attempts: int, now: datetime) -> dict[str, Any]:
    """A row's values once it is given up on (worker claim or reaper): a recorded failure, over
    whatever result it had before."""
    return {
        **dict.fromkeys(RESULT_COLUMNS),
        "status": "failed",
        "reason": TOO_MANY_ATTEMPTS,
        "error": f"{TOO_MANY_ATTEMPTS}: still unfinished after {max_attempts} attempts",
        "finished_at": now,
    }


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Image(Base):
    """One listing photo of the catalogue."""

    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    listing_id: Mapped[str | None] = mapped_column(String(128), index=True)
    source_uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    """A published model: where its weights are, their checksum and the gate it carries."""

    __tablename__ = "model_versions"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    architecture: Mapped[str] = mapped_column(String(128))
    weights_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    input_size: Mapped[int] = mapped_column(Integer)
    min_area: Mapped[float] = mapped_column(Float, default=0.05)
    max_area: Mapped[float] = mapped_column(Float, default=0.50)
    min_confidence: Mapped[float] = mapped_column(Float, default=0.98)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Segmentation(Base):
    """What happened to one image under one model version."""

    __tablename__ = "segmentations"

    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), primary_key=True)
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.name"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    decision: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    fg_score: Mapped[float | None] = mapped_column(Float)
    bg_score: Mapped[float | None] = mapped_column(Float)
    mask_area: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    cutout_uri: Mapped[str | None] = mapped_column(Text)
    preview_uri: Mapped[str | None] = mapped_column(Text)
    # What a reviewer and a re-gate need, kept for every decided image (network resolution):
    # the cleaned mask (0/255) and the probability map (0..255) as grey PNGs.
    mask_uri: Mapped[str | None] = mapped_column(Text)
    probability_uri: Mapped[str | None] = mapped_column(Text)
    gate_min_confidence: Mapped[float | None] = mapped_column(Float)  # the decision's threshold
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    enqueued_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    timings: Mapped[dict[str, Any] | None] = mapped_column()  # seconds per stage

    __table_args__ = (
        # The reaper and the worker's claim only ever look at unfinished rows: keep that small.
        Index(
            "ix_segmentations_unfinished",
            "status",
            "started_at",
            postgresql_where=text("status IN ('queued', 'processing')"),
            sqlite_where=text("status IN ('queued', 'processing')"),
        ),
        Index("ix_segmentations_version_finished", "model_version", "finished_at"),
    )


class Run(Base):
    """A producer run (nightly backfill, admin enqueue, reaper pass) with its resumable cursor."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # backfill / admin / reaper
    model_version: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running/finished/failed
    cursor: Mapped[str | None] = mapped_column(String(128))  # last image id handled
    enqueued: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)  # why a failed run stopped


def run_error(error: BaseException) -> str:
    """What a failed run's `error` says: the exception, on one line."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:1000]


VERDICTS = ("clean", "flawed")
FLAWS = ("missed_part", "background_kept", "hole_filled", "halo", "other")


class GateSetting(Base):
    """A confidence threshold applied to a model version (`jewelcut calibrate --apply`): the
    latest row is the version's gate; none means the card's."""

    __tablename__ = "gates"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    model_version: Mapped[str] = mapped_column(ForeignKey("model_versions.name"), index=True)
    min_confidence: Mapped[float] = mapped_column(Float)
    target_precision: Mapped[float | None] = mapped_column(Float)
    precision_low: Mapped[float | None] = mapped_column(Float)  # Wilson lower bound at apply
    reviewed: Mapped[int | None] = mapped_column(Integer)
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewItem(Base):
    """One image of a model version's review sample (the stored queue). A reviewer claims an
    item for `review_claim_s`; a claim past that is free again."""

    __tablename__ = "review_queue"

    model_version: Mapped[str] = mapped_column(String(128), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    stratum: Mapped[str] = mapped_column(String(64))  # e.g. "accepted 0.990-0.995"
    position: Mapped[float] = mapped_column(Float)  # random order across strata
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_at: Mapped[datetime | None] = mapped_column()
    reviewed_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        ForeignKeyConstraint(
            ["image_id", "model_version"],
            ["segmentations.image_id", "segmentations.model_version"],
            ondelete="CASCADE",
        ),
        Index("ix_review_queue_open", "model_version", "reviewed_at", "position"),
    )


class Review(Base):
    """A person's verdict on one image under one model version; one per reviewer (a second
    verdict by the same reviewer replaces the first)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(16))
    flaw: Mapped[str | None] = mapped_column(String(32))
    reviewer: Mapped[str] = mapped_column(String(128))
    reviewed_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        ForeignKeyConstraint(
            ["image_id", "model_version"],
            ["segmentations.image_id", "segmentations.model_version"],
            ondelete="CASCADE",
        ),
        CheckConstraint("verdict IN ('clean', 'flawed')", name="ck_reviews_verdict"),
        CheckConstraint(
            "flaw IS NULL OR flaw IN "
            "('missed_part', 'background_kept', 'hole_filled', 'halo', 'other')",
            name="ck_reviews_flaw",
        ),
        Index("ux_reviews_one_per_reviewer", "image_id", "model_version", "reviewer", unique=True),
        Index("ix_reviews_version", "model_version", "reviewed_at"),
    )


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_pre_ping: a worker survives a Postgres restart between chunks.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = sessionmaker(get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
