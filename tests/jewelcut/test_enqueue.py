"""Admin enqueue: idempotent rows, unknown IDs, stdin and files, --force (embedded: no services;
the chunks run in-process, so results are there when the call returns)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from jewelcut.cli import app
from jewelcut.db import Image, Run, Segmentation, session_scope
from jewelcut.enqueue import enqueue_images
from jewelcut.settings import Settings
from jewelcut.storage import get_storage
from worker.inprocess import InProcessChunkQueue


@pytest.fixture
def catalogue(embedded_settings: Settings, listing_photo: Callable[[int], bytes]) -> list[str]:
    storage = get_storage(embedded_settings)
    ids = [f"img-{n}" for n in range(3)]
    with session_scope(embedded_settings.resolved_database_url) as session:
        for n, image_id in enumerate(ids):
            uri = storage.put(f"sources/{image_id}.jpg", listing_photo(n))
            session.add(Image(id=image_id, source_uri=uri))
    return ids


def _statuses(settings: Settings) -> dict[str, tuple[str, int]]:
    with session_scope(settings.resolved_database_url) as session:
        rows = session.scalars(select(Segmentation))
        return {row.image_id: (row.status, row.attempts) for row in rows}


def test_enqueue_records_runs_and_is_idempotent(
    embedded_settings: Settings, catalogue: list[str]
) -> None:
    first = enqueue_images(
        [*catalogue, catalogue[0], "  ", "ghost"],
        embedded_settings,
        InProcessChunkQueue(embedded_settings),
    )
    assert (first.requested, first.queued, first.unknown, first.chunks) == (4, 3, 1, 1)
    assert _statuses(embedded_settings) == dict.fromkeys(catalogue, ("done", 1))

    again = enqueue_images(catalogue, embedded_settings, InProcessChunkQueue(embedded_settings))
    assert (again.queued, again.reset, again.already_recorded, again.chunks) == (0, 0, 3, 0)
    with session_scope(embedded_settings.resolved_database_url) as session:
        run = session.get_one(Run, first.run_id)
        assert (run.kind, run.status, run.enqueued, run.skipped) == ("admin", "finished", 3, 1)


def test_force_resets_finished_rows(embedded_settings: Settings, catalogue: list[str]) -> None:
    enqueue_images(catalogue, embedded_settings, InProcessChunkQueue(embedded_settings))
    with session_scope(embedded_settings.resolved_database_url) as session:
        row = session.scalars(select(Segmentation).where(Segmentation.image_id == "img-0")).one()
        row.status, row.reason = "failed", "fetch_error"
    forced = enqueue_images(
        catalogue, embedded_settings, InProcessChunkQueue(embedded_settings), force=True
    )
    assert (forced.queued, forced.reset, forced.chunks) == (0, 3, 1)
    assert _statuses(embedded_settings) == dict.fromkeys(catalogue, ("done", 1))


def test_command_reads_files_and_stdin(
    embedded_settings: Settings, catalogue: list[str], tmp_path: Path
) -> None:
    listing = tmp_path / "ids.txt"
    listing.write_text(f"{catalogue[0]}\n\n{catalogue[1]}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["enqueue", "--file", str(listing)])
    assert result.exit_code == 0, result.output
    assert "2 queued" in result.output
    result = runner.invoke(app, ["enqueue", "-"], input="\n".join(catalogue) + "\n")
    assert result.exit_code == 0, result.output
    assert "1 queued" in result.output and "2 already recorded" in result.output
    assert set(_statuses(embedded_settings)) == set(catalogue)


def test_command_without_ids_or_with_only_unknown_ones_fails(
    embedded_settings: Settings, catalogue: list[str]
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["enqueue"]).exit_code != 0
    result = runner.invoke(app, ["enqueue", "ghost-1", "ghost-2"])
    assert result.exit_code == 1 and "2 unknown" in result.output
    result = runner.invoke(app, ["enqueue", "--model-version", "never-published", catalogue[0]])
    assert result.exit_code == 2 and "never-published" in result.output
