"""Publish a model version: upload its weights and card to the configured storage (the S3
bucket, or the embedded folder) under `models/<name>/`, then register it in the database so a
worker can load it by name (jewelcut.registry downloads, checks the sha256 and caches it)."""

from __future__ import annotations

from pathlib import Path

from jewelcut.modelcard import CARD_FILE, WEIGHTS_FILE, ModelCard, verify_weights
from jewelcut.registry import register_model_version
from jewelcut.settings import Settings
from jewelcut.storage import get_storage


def model_key(name: str, filename: str) -> str:
    return f"models/{name}/{filename}"


def publish_model(model_dir: Path, settings: Settings) -> tuple[ModelCard, str]:
    """Upload and register; returns the card and the weights' URI. Refuses weights whose
    sha256 is not the card's (jewelcut.modelcard.ChecksumMismatch)."""
    card = ModelCard.read(model_dir)
    if not card.weights_sha256:
        raise ValueError(f"{model_dir / CARD_FILE} has no weights_sha256: export it first")
    weights = verify_weights(model_dir, card)
    storage = get_storage(settings)
    weights_uri = storage.put(model_key(card.name, WEIGHTS_FILE), weights.read_bytes())
    storage.put(
        model_key(card.name, CARD_FILE), (model_dir / CARD_FILE).read_bytes(), "application/json"
    )
    register_model_version(card, weights_uri, settings)
    return card, weights_uri
