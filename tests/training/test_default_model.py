"""The shipped default model version: intact, small, documented, and it segments a ring."""

from __future__ import annotations

import numpy as np

from jewelcut.settings import DEFAULT_MODELS_DIR
from training.evaluate import iou, truth_at
from training.synth import listing_photo
from worker.model import WEIGHTS_FILE, ModelCard, default_model_dir, sha256_file
from worker.pipeline import Segmenter

MAX_WEIGHTS_BYTES = 30 * 1024 * 1024


def ring_photo() -> tuple[np.ndarray, np.ndarray]:
    """The first seeded ring photo whose ring covers a listing-like share (5%..50%)."""
    for seed in range(100):
        rgb, mask = listing_photo(np.random.default_rng(seed), 480, 360, kind="ring")
        if 0.05 <= mask.mean() <= 0.5:
            return rgb, mask
    raise AssertionError("no listing-sized ring in 100 seeds")


def test_shipped_default_matches_its_card() -> None:
    model_dir = default_model_dir(DEFAULT_MODELS_DIR)
    card = ModelCard.read(model_dir)
    weights = model_dir / WEIGHTS_FILE
    assert sha256_file(weights) == card.weights_sha256
    assert weights.stat().st_size <= MAX_WEIGHTS_BYTES
    assert card.weights_dtype == "float16"
    assert card.architecture.encoder == "efficientnet-b3"
    assert card.training["steps"] > 0 and card.training["config"]["loss"] in ("bce", "bce+dice")
    assert card.data["train"], "the card records the data recipe"
    assert card.metrics["images"] >= 500, "evaluated on a held-out set of at least 500 images"


def test_shipped_default_segments_a_generated_ring() -> None:
    segmenter = Segmenter(default_model_dir(DEFAULT_MODELS_DIR), device="cpu", backend="torch")
    rgb, mask = ring_photo()
    (prediction,) = segmenter.predict([rgb])
    truth = truth_at(mask, *prediction.mask.shape)
    assert iou(prediction.mask, truth) >= 0.85
