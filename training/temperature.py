"""Fit a version's logit temperature on a calibration set (temperature scaling, Guo et al. 2017):
the T that minimises the pixels' binary cross-entropy of sigmoid(logits / T) against the true
masks at network resolution. T > 1 means the network was overconfident. The mask is unchanged
(the sign of the logits is), so only the confidences the gate scores and the soft edges move."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.dataset import read_manifest, read_sample
from training.evaluate import truth_at
from worker.preprocess import Preprocessor, crop_to_image

# The search range of T, and the golden-section iterations that pin it to ~1e-5 relative.
LOWEST, HIGHEST, ITERATIONS = 0.25, 8.0, 40


@dataclass(frozen=True)
class TemperatureFit:
    temperature: float
    pixel_nll_before: float  # at T = 1
    pixel_nll_after: float
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        return {key: round(value, 6) for key, value in asdict(self).items()}


def pixel_nll(logits: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits / temperature), computed stably."""
    scaled = logits / temperature
    losses = np.maximum(scaled, 0) - scaled * truth + np.log1p(np.exp(-np.abs(scaled)))
    return float(losses.mean(dtype=np.float64))


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> TemperatureFit:
    """Golden-section search over log T (the NLL is unimodal in T for fixed logits)."""
    low, high = math.log(LOWEST), math.log(HIGHEST)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(ITERATIONS):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if pixel_nll(logits, truth, math.exp(left)) <= pixel_nll(logits, truth, math.exp(right)):
            high = right
        else:
            low = left
    temperature = math.exp((low + high) / 2)
    return TemperatureFit(
        temperature=temperature,
        pixel_nll_before=pixel_nll(logits, truth, 1.0),
        pixel_nll_after=pixel_nll(logits, truth, temperature),
        pixels=int(logits.size),
    )


def collect_logits(
    predict_logits: Callable[[np.ndarray], np.ndarray],
    folder: Path,
    preprocessor: Preprocessor,
    advance: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's logits at network resolution (padding cropped), flattened, with the truth
    (1.0 or 0.0) at the same resolution as the evaluation judges it."""
    logits, truths = [], []
    for sample in read_manifest(folder)["samples"]:
        rgb, mask = read_sample(folder, sample["name"])
        prepared = preprocessor(rgb)
        logit = crop_to_image(predict_logits(prepared.tensor[None])[0], prepared)
        logits.append(logit.astype(np.float32).ravel())
        truths.append(truth_at(mask, *logit.shape).astype(np.float32).ravel())
        if advance:
            advance()
    return np.concatenate(logits), np.concatenate(truths)
