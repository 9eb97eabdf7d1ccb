"""The tables: images, model_versions, runs, segmentations (as jewelcut/db.py declares them).

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

UNFINISHED = sa.text("status IN ('queued', 'processing')")


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("listing_id", sa.String(128), nullable=True),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_images_listing_id", "images", ["listing_id"])

    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("architecture", sa.String(128), nullable=False),
        sa.Column("weights_uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("input_size", sa.Integer(), nullable=False),
        sa.Column("min_area", sa.Float(), nullable=False),
        sa.Column("max_area", sa.Float(), nullable=False),
        sa.Column("min_confidence", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )

    op.create_table(
        "runs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cursor", sa.String(128), nullable=True),
        sa.Column("enqueued", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )

    op.create_table(
        "segmentations",
        sa.Column("image_id", sa.String(128), sa.ForeignKey("images.id"), primary_key=True),
        sa.Column(
            "model_version", sa.String(128), sa.ForeignKey("model_versions.name"), primary_key=True
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("fg_score", sa.Float(), nullable=True),
        sa.Column("bg_score", sa.Float(), nullable=True),
        sa.Column("mask_area", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("cutout_uri", sa.Text(), nullable=True),
        sa.Column("preview_uri", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "run_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("runs.id"),
            nullable=True,
        ),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("timings", sa.JSON(), nullable=True),
    )
    op.create_index(
        "ix_segmentations_unfinished",
        "segmentations",
        ["status", "started_at"],
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.create_index(
        "ix_segmentations_version_finished", "segmentations", ["model_version", "finished_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_segmentations_version_finished", table_name="segmentations")
    op.drop_index("ix_segmentations_unfinished", table_name="segmentations")
    op.drop_table("segmentations")
    op.drop_table("runs")
    op.drop_table("model_versions")
    op.drop_index("ix_images_listing_id", table_name="images")
    op.drop_table("images")
