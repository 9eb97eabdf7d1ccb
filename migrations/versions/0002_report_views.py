"""Views for the accept rate: by day and model version, by model version, rejections by reason,
failures by reason. `jewelcut report` reads them; a person can query them in psql.

The accept rate is accepted / done: the share of the images the gate decided on that it
accepted. Failed images (not decided) are counted beside it, never in it. Days are UTC days of
finished_at.

Revision ID: 0002_report_views
Revises: 0001_initial
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002_report_views"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

VIEWS = (
    "accept_rate_by_day",
    "accept_rate_by_model_version",
    "rejections_by_reason",
    "failures_by_reason",
)

COUNTS = """
    COUNT(*) AS finished,
    SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END) AS done,
    SUM(CASE WHEN decision = 'accepted' THEN 1 ELSE 0 END) AS accepted,
    SUM(CASE WHEN decision = 'rejected' THEN 1 ELSE 0 END) AS rejected,
    SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
    CAST(SUM(CASE WHEN decision = 'accepted' THEN 1 ELSE 0 END) AS DOUBLE PRECISION)
        / NULLIF(SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END), 0) AS accept_rate
"""
FINISHED = "status IN ('done', 'failed') AND finished_at IS NOT NULL"


def _utc_day() -> str:
    if op.get_bind().dialect.name == "postgresql":
        return "CAST(finished_at AT TIME ZONE 'UTC' AS DATE)"
    return "date(finished_at)"  # SQLite keeps UTC timestamps as ISO text


def upgrade() -> None:
    day = _utc_day()
    op.execute(
        f"CREATE VIEW accept_rate_by_day AS SELECT {day} AS day, model_version, {COUNTS} "
        f"FROM segmentations WHERE {FINISHED} GROUP BY {day}, model_version"
    )
    op.execute(
        f"CREATE VIEW accept_rate_by_model_version AS SELECT model_version, {COUNTS}, "
        "MIN(finished_at) AS first_finished_at, MAX(finished_at) AS last_finished_at "
        f"FROM segmentations WHERE {FINISHED} GROUP BY model_version"
    )
    op.execute(
        "CREATE VIEW rejections_by_reason AS SELECT model_version, reason, COUNT(*) AS images "
        "FROM segmentations WHERE status = 'done' AND decision = 'rejected' "
        "GROUP BY model_version, reason"
    )
    op.execute(
        "CREATE VIEW failures_by_reason AS SELECT model_version, reason, COUNT(*) AS images "
        "FROM segmentations WHERE status = 'failed' GROUP BY model_version, reason"
    )


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
