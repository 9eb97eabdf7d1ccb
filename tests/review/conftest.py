"""Review fixtures: Postgres (the session's database, emptied) with local storage and chunks
run in-process, decided rows made by hand, and a real run of listing photos through the worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from jewelcut.db import Image, Segmentation, get_engine, session_scope, utcnow
from jewelcut.modelcard import ModelCard
from jewelcut.registry import register_model_version
from jewelcut.settings import Settings, reset_settings_cache
from tests.conftest import _apply_environment, _common_environment, truncate_all

VERSION = "review-test-v1"


@pytest.fixture
def postgres_settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    postgres_url: str,
    test_models_dir: Path,
    model_cache_dir: Path,
) -> Iterator[Settings]:
    """The session's Postgres (tables emptied), storage in a local folder, no broker: chunks
    run in-process through the real task code."""
    truncate_all(postgres_url)
    values = _common_environment(tmp_path / "data", test_models_dir, model_cache_dir)
    values["JEWELCUT_DATABASE_URL"] = postgres_url
    settings = _apply_environment(monkeypatch, values)
    yield settings
    reset_settings_cache()


def decided_rows(
    settings: Settings, results: list[tuple[str, str, float, float]], version: str = VERSION
) -> list[str]:
    """Hand-made results: (image_id, decision, confidence, mask_area); `reason` follows the
    card's gate. Registers the version (its card's gate: 0.05..0.50, 0.98)."""
    register_model_version(ModelCard(name=version), f"file:///models/{version}", settings)
    with session_scope(settings.resolved_database_url) as session:
        for image_id, decision, confidence, area in results:
            session.add(Image(id=image_id, source_uri=f"file:///nowhere/{image_id}.jpg"))
            session.flush()
            reason = None if decision == "accepted" else "low_confidence"
            session.add(
                Segmentation(
                    image_id=image_id,
                    model_version=version,
                    status="done",
                    decision=decision,
                    reason=reason,
                    confidence=confidence,
                    mask_area=area,
                    gate_min_confidence=0.98,
                    finished_at=utcnow(),
                )
            )
    return [image_id for image_id, *_ in results]


def verdicts_in_postgres(settings: Settings, version: str = VERSION) -> dict[str, list[str]]:
    """{image_id: [verdict by each reviewer]} read straight from the reviews table."""
    query = text("SELECT image_id, verdict FROM reviews WHERE model_version = :v ORDER BY reviewer")
    found: dict[str, list[str]] = {}
    with get_engine(settings.resolved_database_url).connect() as connection:
        for image_id, verdict in connection.execute(query, {"v": version}):
            found.setdefault(image_id, []).append(verdict)
    return found


def real_run(settings: Settings, count: int, seed: int = 7070) -> str:
    """`count` synthetic listing photos (the demo's generator; the last one truncated) imported
    and backfilled with the active model, in-process; returns the model version."""
    from jewelcut.storage import LocalStorage
    from producer.backfill import run_backfill
    from producer.catalogue import import_rows, rows_from_listing
    from producer.demo import write_catalogue_photos
    from producer.queueing import chunk_queue

    folder = settings.storage_root / "catalogue"
    write_catalogue_photos(folder, count, seed)
    import_rows(settings, rows_from_listing(LocalStorage(folder), "", lambda *_: None))
    return run_backfill(settings, queue=chunk_queue(settings)).model_version
