"""The shipped default model version: intact, small, documented, and it segments a ring."""

from __future__ import annotations

import numpy as np

from jewelcut.modelcard import WEIGHTS_FILE, ModelCard, default_model_dir, sha256_file
from jewelcut.settings import DEFAULT_MODELS_DIR
from training.evaluate import iou, truth_at
from training.synth import listing_photo
from worker.pipeline import Segmenter

MAX_WEIGHTS_BYTES = 30 * 1024 * 1024


def ring_photos(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` seeded ring photos whose ring covers a listing-like share (5%..50%)."""
    photos = []
    for seed in range(100):
        rgb, mask = listing_photo(np.random.default_rng(seed), 480, 360, kind="ring")
        if 0.05 <= mask.mean() <= 0.5:
            photos.append((rgb, mask))
        if len(photos) == count:
            return photos
    raise AssertionError(f"fewer than {count} listing-sized rings in 100 seeds")


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


def test_shipped_default_segments_generated_rings() -> None:
    """Each of the first five rings at IoU >= 0.85: five photos test the model rather than one
    seed (v8-gpu flipped four ways scores 0.967-0.988, v8-gpu 0.965-0.988, v5 flip-averaged
    0.871-0.987, v5 0.852-0.982, v3 0.946-0.970; v2 found a false blob in the cloth of the
    first, IoU 0.36)."""
    segmenter = Segmenter(default_model_dir(DEFAULT_MODELS_DIR), device="cpu", backend="torch")
    photos = ring_photos(5)
    predictions = segmenter.predict([rgb for rgb, _ in photos])
    ious = [
        iou(prediction.mask, truth_at(mask, *prediction.mask.shape))
        for prediction, (_, mask) in zip(predictions, photos, strict=True)
    ]
    assert min(ious) >= 0.85, ious
