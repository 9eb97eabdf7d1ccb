"""Publish uploads a version to the S3 model storage and registers it in Postgres; a worker then
loads it by name (download, sha256 check) and refuses tampered weights."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from jewelcut.db import ModelVersion, session_scope
from jewelcut.modelcard import WEIGHTS_FILE, ChecksumMismatch, Flips, ModelCard, sha256_file
from jewelcut.registry import resolve_model_dir
from jewelcut.settings import Settings
from jewelcut.storage import get_storage
from training.publish import model_key, publish_model
from worker.model import build_unet, save_network


@pytest.fixture
def exported_version(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    name = f"published-{uuid.uuid4().hex[:8]}"
    card = ModelCard(
        name=name, input_size=160, test_time_flips=Flips.BOTH, metrics={"mean_iou": 0.5}
    )
    save_network(build_unet(card.architecture), tmp_path / name, card)
    return tmp_path / name


@pytest.mark.services
def test_publish_uploads_registers_and_a_worker_loads_it(
    exported_version: Path, distributed_settings: Settings
) -> None:
    card, uri = publish_model(exported_version, distributed_settings)
    assert uri.startswith("s3://")
    storage = get_storage(distributed_settings)
    assert storage.exists(model_key(card.name, WEIGHTS_FILE))
    with session_scope(distributed_settings.resolved_database_url) as session:
        row = session.get(ModelVersion, card.name)
        assert row is not None and row.sha256 == card.weights_sha256 and row.input_size == 160
        assert row.weights_uri == uri and row.metrics == {"mean_iou": 0.5}

    loaded_dir = resolve_model_dir(card.name, distributed_settings)
    assert sha256_file(loaded_dir / WEIGHTS_FILE) == card.weights_sha256
    card_there = ModelCard.read(loaded_dir)
    assert card_there.test_time_flips == Flips.BOTH, "how the card runs the network travels too"

    with session_scope(distributed_settings.resolved_database_url) as session:
        session.get(ModelVersion, card.name).sha256 = "0" * 64
    (loaded_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ChecksumMismatch, match="refusing"):
        resolve_model_dir(card.name, distributed_settings)


def test_publish_refuses_weights_that_do_not_match_the_card(
    exported_version: Path, embedded_settings: Settings
) -> None:
    weights = exported_version / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatch):
        publish_model(exported_version, embedded_settings)
