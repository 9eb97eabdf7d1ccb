"""The gate as design.md defines it, on hand-made probability maps (worker.gate)."""

from __future__ import annotations

import numpy as np
import pytest

from jewelcut.modelcard import GateThresholds
from worker.gate import score_and_gate

SIDE = 64  # 4096 pixels: a 1024-pixel mask covers exactly 25%
STUDY = GateThresholds()  # 0.05 <= area <= 0.50, confidence >= 0.98


def square_mask(pixels: int) -> np.ndarray:
    mask = np.zeros(SIDE * SIDE, bool)
    mask[:pixels] = True
    return mask.reshape(SIDE, SIDE)


def probability_map(mask: np.ndarray, inside: float, outside: float) -> np.ndarray:
    return np.where(mask, inside, outside).astype(np.float64)


def test_scores_are_the_definition() -> None:
    mask = square_mask(1024)
    probability = probability_map(mask, 0.75, 0.125)
    result = score_and_gate(probability, mask, STUDY)
    assert result.fg_score == 0.75
    assert result.bg_score == 0.875
    assert result.confidence == 0.75
    assert result.mask_area == 0.25
    assert (result.decision, result.reason) == ("rejected", "low_confidence")


def test_confident_mask_of_a_quarter_is_accepted() -> None:
    mask = square_mask(1024)
    result = score_and_gate(probability_map(mask, 1.0, 0.0), mask, STUDY)
    assert (result.fg_score, result.bg_score, result.confidence) == (1.0, 1.0, 1.0)
    assert (result.decision, result.reason) == ("accepted", None)


@pytest.mark.parametrize(
    ("pixels", "area", "decision", "reason"),
    [
        (204, 204 / 4096, "rejected", "area_too_small"),  # 4.98%
        (2048, 0.5, "accepted", None),  # exactly 50%: inside the gate
        (2049, 2049 / 4096, "rejected", "area_too_large"),
    ],
)
def test_area_boundaries(pixels: int, area: float, decision: str, reason: str | None) -> None:
    mask = square_mask(pixels)
    result = score_and_gate(probability_map(mask, 1.0, 0.0), mask, STUDY)
    assert result.mask_area == area
    assert (result.decision, result.reason) == (decision, reason)


def test_area_exactly_five_percent_is_accepted() -> None:
    mask = np.zeros((100, 100), bool)
    mask[:5, :] = True  # 500 of 10,000 pixels
    result = score_and_gate(np.where(mask, 1.0, 0.0), mask, STUDY)
    assert result.mask_area == 0.05
    assert (result.decision, result.reason) == ("accepted", None)
    mask[0, 0] = False
    assert score_and_gate(np.where(mask, 1.0, 0.0), mask, STUDY).reason == "area_too_small"


def small_mask() -> np.ndarray:
    """32 of 256 pixels (12.5%): few enough that a mean of equal float64 values is exact
    (a long float64 sum drifts by an ulp or two, which would blur a test at the boundary)."""
    mask = np.zeros((16, 16), bool)
    mask[:2, :] = True
    return mask


def test_confidence_exactly_at_threshold_is_accepted() -> None:
    mask = small_mask()
    result = score_and_gate(np.where(mask, 0.98, 0.0), mask, STUDY)
    assert result.mask_area == 0.125
    assert result.fg_score == 0.98
    assert result.confidence == 0.98
    assert (result.decision, result.reason) == ("accepted", None)


def test_confidence_just_under_threshold_is_rejected() -> None:
    mask = small_mask()
    just_under = float(np.nextafter(0.98, 0.0))
    result = score_and_gate(np.where(mask, just_under, 0.0), mask, STUDY)
    assert result.confidence == just_under
    assert (result.decision, result.reason) == ("rejected", "low_confidence")


def test_background_score_can_be_the_weak_side() -> None:
    mask = square_mask(1024)
    result = score_and_gate(probability_map(mask, 1.0, 0.0625), mask, STUDY)
    assert result.bg_score == 0.9375
    assert result.confidence == 0.9375
    assert result.reason == "low_confidence"


def test_area_is_checked_before_confidence() -> None:
    mask = square_mask(100)
    result = score_and_gate(probability_map(mask, 0.5, 0.5), mask, STUDY)
    assert result.reason == "area_too_small"


def test_an_empty_mask_is_no_object_apart_from_a_small_one() -> None:
    empty = np.zeros((SIDE, SIDE), bool)
    result = score_and_gate(np.zeros((SIDE, SIDE)), empty, STUDY)
    assert (result.decision, result.reason) == ("rejected", "no_object")
    one_pixel = empty.copy()
    one_pixel[0, 0] = True
    assert score_and_gate(np.where(one_pixel, 1.0, 0.0), one_pixel, STUDY).reason == (
        "area_too_small"
    )


def test_empty_and_full_masks_score_zero() -> None:
    empty = np.zeros((SIDE, SIDE), bool)
    result = score_and_gate(np.zeros((SIDE, SIDE)), empty, STUDY)
    assert (result.fg_score, result.bg_score, result.mask_area) == (0.0, 1.0, 0.0)
    assert result.confidence == 0.0
    full = ~empty
    result = score_and_gate(np.ones((SIDE, SIDE)), full, STUDY)
    assert (result.fg_score, result.bg_score, result.confidence) == (1.0, 0.0, 0.0)


def test_thresholds_come_from_the_model_version() -> None:
    mask = square_mask(1024)
    probability = probability_map(mask, 0.75, 0.0)
    recalibrated = GateThresholds(min_area=0.01, max_area=0.9, min_confidence=0.75)
    assert score_and_gate(probability, mask, STUDY).decision == "rejected"
    assert score_and_gate(probability, mask, recalibrated).decision == "accepted"
