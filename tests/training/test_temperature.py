"""Fitting a version's logit temperature (training.temperature)."""

from __future__ import annotations

import numpy as np
import pytest

from training.temperature import fit_temperature, pixel_nll


def calibrated_pixels(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and truths drawn so that sigmoid(logits) is each pixel's true probability."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 4.0, count)
    truth = (rng.random(count) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return logits.astype(np.float32), truth


@pytest.mark.parametrize("overconfidence", [1.0, 1.6, 0.7])
def test_fit_recovers_the_temperature_that_undoes_over_or_underconfidence(
    overconfidence: float,
) -> None:
    logits, truth = calibrated_pixels(200_000, seed=3)
    fit = fit_temperature(logits * overconfidence, truth)
    assert fit.temperature == pytest.approx(overconfidence, rel=0.03)
    assert fit.pixel_nll_after <= fit.pixel_nll_before
    assert fit.pixels == 200_000


def test_pixel_nll_is_finite_for_saturated_logits() -> None:
    logits = np.array([-200.0, 200.0, 200.0], np.float32)
    truth = np.array([0.0, 1.0, 0.0], np.float32)
    assert pixel_nll(logits, truth, 1.0) == pytest.approx(200 / 3, rel=1e-6)
