"""`jewelcut demo` end to end on the embedded default: photos, import, backfill through the real
chunk task in-process, report and review sheet."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Segmentation, get_engine
from jewelcut.settings import Settings
from producer.demo import DEMO_SEED, demo_settings

pytestmark = pytest.mark.slow


def test_demo_runs_the_main_job_and_reports(
    embedded_settings: Settings, tmp_path: Path, test_model_name: str
) -> None:
    home = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--images", "5", "--out", str(home)])

    assert result.exit_code == 0, result.output
    settings = demo_settings(embedded_settings, home)
    with get_engine(settings.resolved_database_url).connect() as connection:
        statuses = dict(
            connection.execute(
                select(Segmentation.status, func.count())
                .where(Segmentation.model_version == test_model_name)
                .group_by(Segmentation.status)
            ).all()
        )
    assert statuses == {"done": 4, "failed": 1}  # the last photo is a truncated upload
    assert "Accept rate by model version" in result.output
    assert "decode_error" in result.output
    sheet = home / "review-sheet" / "sheet.html"
    # every decided row shows all five columns, rejected ones too (the truncated upload has
    # no photo to show)
    assert sheet.is_file() and sheet.read_text().count("<img") == 4 * 5
    photos = sorted((home / "storage" / "catalogue").glob("demo-*.jpg"))
    assert len(photos) == 5
    assert DEMO_SEED not in (0, 1, 2, 20261126)  # never one of training's seeds
    assert "alembic" not in result.output  # the demo's output is its report

    drawn = [(path, path.stat().st_mtime_ns) for path in photos]
    again = CliRunner().invoke(app, ["demo", "--images", "5", "--out", str(home)])
    assert again.exit_code == 0, again.output
    assert "(drawn before: reused)" in again.output
    assert [(path, path.stat().st_mtime_ns) for path in photos] == drawn
    assert "5 unchanged" in again.output and "backfill: 0 images" in again.output
