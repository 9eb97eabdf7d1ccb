"""Model versions by name: shipped directories, database rows with downloaded weights, the cache
healed when corrupt, mismatches refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jewelcut.db import ModelVersion, session_scope
from jewelcut.modelcard import WEIGHTS_FILE, ChecksumMismatch, ModelCard, default_model_dir
from jewelcut.registry import (
    UnknownModelVersion,
    active_model_version,
    ensure_registered,
    register_model_version,
    resolve_model_dir,
)
from jewelcut.settings import Settings


@pytest.fixture
def published(embedded_settings: Settings, tmp_path: Path) -> ModelCard:
    """The test model copied elsewhere under a new name and registered by its weights' URI."""
    shipped = default_model_dir(embedded_settings.models_dir)
    card = ModelCard.read(shipped).model_copy(update={"name": "published-v2"})
    weights = tmp_path / "bucket" / "published-v2.safetensors"
    weights.parent.mkdir()
    shutil.copyfile(shipped / WEIGHTS_FILE, weights)
    register_model_version(card, weights.as_uri(), embedded_settings)
    return card


def test_shipped_version_resolves_to_its_folder(embedded_settings: Settings) -> None:
    name = active_model_version(embedded_settings)
    assert resolve_model_dir(name, embedded_settings) == embedded_settings.models_dir / name
    ensure_registered(name, embedded_settings)
    with session_scope(embedded_settings.resolved_database_url) as session:
        row = session.get_one(ModelVersion, name)
        assert row.weights_uri.startswith("file://") and len(row.sha256) == 64
        assert (row.min_area, row.max_area, row.min_confidence) == (0.05, 0.50, 0.98)


def test_registered_version_is_downloaded_verified_and_cached(
    embedded_settings: Settings, published: ModelCard
) -> None:
    directory = resolve_model_dir(published.name, embedded_settings)
    assert directory.is_relative_to(embedded_settings.resolved_model_cache_dir)
    assert ModelCard.read(directory).weights_sha256 == published.weights_sha256

    (directory / WEIGHTS_FILE).write_bytes(b"corrupt")  # a damaged cache heals itself
    assert resolve_model_dir(published.name, embedded_settings) == directory
    assert (directory / WEIGHTS_FILE).stat().st_size > 1000


def test_weights_that_do_not_match_the_registry_are_refused(
    embedded_settings: Settings, published: ModelCard
) -> None:
    with session_scope(embedded_settings.resolved_database_url) as session:
        session.get_one(ModelVersion, published.name).sha256 = "0" * 64
    with pytest.raises(ChecksumMismatch, match="refusing to load"):
        resolve_model_dir(published.name, embedded_settings)


def test_configured_version_and_unknown_names(
    embedded_settings: Settings, published: ModelCard
) -> None:
    configured = embedded_settings.model_copy(update={"model_version": published.name})
    assert active_model_version(configured) == published.name
    with pytest.raises(UnknownModelVersion):
        resolve_model_dir("never-published", embedded_settings)
    with pytest.raises(UnknownModelVersion):
        ensure_registered("never-published", embedded_settings)
