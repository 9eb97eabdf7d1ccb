"""Metrics, the gate's figures and calibration, on hand-made masks and results."""

from __future__ import annotations

import numpy as np
import pytest

from jewelcut.modelcard import GateThresholds
from training.evaluate import ImageResult, boundary_iou, calibrate, iou, summarise


def disc(radius: int, size: int = 100, centre: tuple[int, int] = (50, 50)) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius**2


def result(name: str, iou_value: float, confidence: float, area: float = 0.2) -> ImageResult:
    decision = "accepted" if confidence >= 0.98 and 0.05 <= area <= 0.5 else "rejected"
    return ImageResult(
        name=name,
        kind="ring",
        background="flat",
        true_area=area,
        iou=iou_value,
        raw_iou=iou_value,
        boundary_iou=iou_value,
        confidence=confidence,
        fg_score=confidence,
        bg_score=confidence,
        mask_area=area,
        decision=decision,
        reason=None if decision == "accepted" else "low_confidence",
    )


def test_iou_and_boundary_iou_on_drawn_shapes() -> None:
    assert iou(disc(20), disc(20)) == 1.0
    assert iou(disc(20), disc(10)) == pytest.approx(disc(10).sum() / disc(20).sum())
    assert boundary_iou(disc(20), disc(20)) == 1.0
    shifted = disc(20, centre=(53, 50))
    assert boundary_iou(disc(20), shifted) < iou(disc(20), shifted), "boundaries are stricter"


def test_summary_counts_accept_rate_and_accepted_precision() -> None:
    results = [
        result("a", 0.95, 0.99),
        result("b", 0.80, 0.985),
        result("c", 0.5, 0.7),
        result("d", 0.97, 0.995),
    ]
    summary = summarise(results, GateThresholds(), 0.98)
    assert summary["accept_rate"] == 0.75
    assert summary["accepted_precision"] == pytest.approx(2 / 3)
    assert summary["rejected_by_reason"] == {"low_confidence": 1}
    assert summary["by_size"]["medium 10-30%"]["images"] == 4


def test_calibration_finds_the_lowest_threshold_meeting_the_target() -> None:
    good = [result(f"g{i}", 0.95, 0.999 - i * 0.0005) for i in range(30)]
    bad = [result(f"b{i}", 0.6, 0.97 - i * 0.001) for i in range(10)]
    calibration = calibrate(good + bad, GateThresholds(), 0.98)
    assert calibration["calibrated_threshold"] == pytest.approx(good[-1].confidence, abs=1e-6)
    assert calibration["calibrated_precision"] == 1.0
    assert calibration["calibrated_accept_rate"] == pytest.approx(30 / 40)
    assert calibration["study_threshold"] == 0.98
    assert calibration["risk_coverage"][0]["risk"] == 0.0
