"""Human review: what the review page needs per decided image (mask and probability URIs, the
threshold each decision used), the review queue, the verdicts, the gates applied by
`jewelcut calibrate --apply`, and views of the reviewed precision with a Wilson interval.

Precision = clean / reviewed among the images the gate accepted (their current decision), one
verdict per image: the latest. The interval is Wilson's at 95% (z = 1.96).

Revision ID: 0004_reviews
Revises: 0003_run_error
Create Date: 2026-12-01
"""

from __future__ import annotations

import itertools

import sqlalchemy as sa
from alembic import op

revision = "0004_reviews"
down_revision = "0003_run_error"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SEGMENTATION = (
    ["image_id", "model_version"],
    ["segmentations.image_id", "segmentations.model_version"],
)
NEW_COLUMNS = (
    lambda: sa.Column("mask_uri", sa.Text(), nullable=True),
    lambda: sa.Column("probability_uri", sa.Text(), nullable=True),
    lambda: sa.Column("gate_min_confidence", sa.Float(), nullable=True),
)
VIEWS = (
    "review_verdicts",
    "reviewed_precision_by_model_version",
    "reviewed_precision_by_confidence_band",
)
# Confidence bands of the band view: finer near the gates that get chosen.
BANDS = (0.0, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
Z2 = 1.959964**2

# Latest verdict per (image, version), beside the image's current result.
REVIEW_VERDICTS = """
CREATE VIEW review_verdicts AS
SELECT r.image_id, r.model_version, r.verdict, r.flaw, r.reviewer, r.reviewed_at,
       s.decision, s.reason, s.confidence, s.mask_area, s.gate_min_confidence
FROM (
    SELECT reviews.*, ROW_NUMBER() OVER (
        PARTITION BY image_id, model_version ORDER BY reviewed_at DESC, id DESC
    ) AS latest
    FROM reviews
) AS r
JOIN segmentations AS s ON s.image_id = r.image_id AND s.model_version = r.model_version
WHERE r.latest = 1
"""


def _wilson(n: str, k: str) -> str:
    """Wilson's interval bounds of k successes in n, as SQL (NULL when n = 0)."""
    p = f"(CAST({k} AS DOUBLE PRECISION) / NULLIF({n}, 0))"
    centre = f"({p} + {Z2} / (2.0 * {n}))"
    spread = f"(1.959964 * SQRT({p} * (1 - {p}) / {n} + {Z2} / (4.0 * {n} * {n})))"
    scale = f"(1 + {Z2} / {n})"
    return (
        f"{p} AS precision, ({centre} - {spread}) / {scale} AS precision_low, "
        f"({centre} + {spread}) / {scale} AS precision_high"
    )


def _band() -> str:
    cases = " ".join(
        f"WHEN confidence < {high} THEN '[{low:.3f}, {high:.3f})'"
        for low, high in itertools.pairwise(BANDS[:-1])
    )
    return f"CASE {cases} ELSE '[{BANDS[-2]:.3f}, {BANDS[-1]:.3f}]' END"


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite >= 3.35 too): a batch copy would trip over 0002's views.
    for column in NEW_COLUMNS:
        op.add_column("segmentations", column())
    op.create_table(
        "gates",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column(
            "model_version", sa.String(128), sa.ForeignKey("model_versions.name"), nullable=False
        ),
        sa.Column("min_confidence", sa.Float(), nullable=False),
        sa.Column("target_precision", sa.Float(), nullable=True),
        sa.Column("precision_low", sa.Float(), nullable=True),
        sa.Column("reviewed", sa.Integer(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gates_model_version", "gates", ["model_version"])
    op.create_table(
        "review_queue",
        sa.Column("model_version", sa.String(128), primary_key=True),
        sa.Column("image_id", sa.String(128), primary_key=True),
        sa.Column("stratum", sa.String(64), nullable=False),
        sa.Column("position", sa.Float(), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(*SEGMENTATION, ondelete="CASCADE"),
    )
    op.create_index(
        "ix_review_queue_open", "review_queue", ["model_version", "reviewed_at", "position"]
    )
    op.create_table(
        "reviews",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("flaw", sa.String(32), nullable=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(*SEGMENTATION, ondelete="CASCADE"),
        sa.CheckConstraint("verdict IN ('clean', 'flawed')", name="ck_reviews_verdict"),
        sa.CheckConstraint(
            "flaw IS NULL OR flaw IN "
            "('missed_part', 'background_kept', 'hole_filled', 'halo', 'other')",
            name="ck_reviews_flaw",
        ),
    )
    op.create_index(
        "ux_reviews_one_per_reviewer",
        "reviews",
        ["image_id", "model_version", "reviewer"],
        unique=True,
    )
    op.create_index("ix_reviews_version", "reviews", ["model_version", "reviewed_at"])

    op.execute(REVIEW_VERDICTS)
    counts = (
        "COUNT(*) AS reviewed, "
        "SUM(CASE WHEN verdict = 'clean' THEN 1 ELSE 0 END) AS clean, "
        "SUM(CASE WHEN verdict = 'flawed' THEN 1 ELSE 0 END) AS flawed"
    )
    op.execute(
        "CREATE VIEW reviewed_precision_by_model_version AS "
        f"SELECT model_version, reviewed, clean, flawed, {_wilson('reviewed', 'clean')} FROM ("
        f"SELECT model_version, {counts} FROM review_verdicts WHERE decision = 'accepted' "
        "GROUP BY model_version) AS counts"
    )
    op.execute(
        "CREATE VIEW reviewed_precision_by_confidence_band AS "
        f"SELECT model_version, band, reviewed, clean, flawed, {_wilson('reviewed', 'clean')} "
        f"FROM (SELECT model_version, {_band()} AS band, {counts} FROM review_verdicts "
        f"WHERE decision = 'accepted' GROUP BY model_version, {_band()}) AS counts"
    )


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_index("ix_reviews_version", table_name="reviews")
    op.drop_index("ux_reviews_one_per_reviewer", table_name="reviews")
    op.drop_table("reviews")
    op.drop_index("ix_review_queue_open", table_name="review_queue")
    op.drop_table("review_queue")
    op.drop_index("ix_gates_model_version", table_name="gates")
    op.drop_table("gates")
    for column in reversed(NEW_COLUMNS):
        op.drop_column("segmentations", column().name)
