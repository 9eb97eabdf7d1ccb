"""Scores and the accept/reject gate: the one implementation used by the worker, the folder CLI
and the training evaluation. The definition is the study's (docs/architecture.md, "The gate")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from jewelcut.modelcard import GateThresholds

Decision = Literal["accepted", "rejected"]


@dataclass(frozen=True)
class GateResult:
    decision: Decision
    reason: str | None  # None when accepted
    confidence: float
    fg_score: float
    bg_score: float
    mask_area: float  # share of the image covered by the cleaned mask, 0..1


def score_and_gate(
    probability: np.ndarray, mask: np.ndarray, thresholds: GateThresholds
) -> GateResult:
    """Score probability map `p` against cleaned mask `M` (same shape) and gate it.

    fg_score = mean(p[M]), bg_score = 1 - mean(p[~M]), confidence = min of the two;
    accepted iff min_area <= area(M)/area(image) <= max_area and confidence >= min_confidence.
    A mean over an empty set counts as the worst score (0), so an empty or full mask never
    reaches a high confidence by accident.
    """
    if probability.shape != mask.shape:
        raise ValueError(f"probability {probability.shape} and mask {mask.shape} differ")
    inside = mask.astype(bool)
    inside_count = int(inside.sum())
    outside_count = inside.size - inside_count
    # float64 sums so that hand-made boundary cases come out exact; summed in place (where=),
    # not over copies of the pixels inside and outside.
    total = float(probability.sum(dtype=np.float64))
    inside_sum = float(probability.sum(dtype=np.float64, where=inside))
    fg_score = inside_sum / inside_count if inside_count else 0.0
    bg_score = 1.0 - (total - inside_sum) / outside_count if outside_count else 0.0
    confidence = min(fg_score, bg_score)
    mask_area = inside_count / inside.size
    decision, reason = decide(mask_area, confidence, thresholds)
    return GateResult(decision, reason, confidence, fg_score, bg_score, mask_area)


def decide(
    mask_area: float, confidence: float, thresholds: GateThresholds
) -> tuple[Decision, str | None]:
    """Rejection reasons: jewelcut.errors.REJECTION_REASONS."""
    if mask_area == 0:  # nothing found: not an object that is merely small
        return "rejected", "no_object"
    if mask_area < thresholds.min_area:
        return "rejected", "area_too_small"
    if mask_area > thresholds.max_area:
        return "rejected", "area_too_large"
    if confidence < thresholds.min_confidence:
        return "rejected", "low_confidence"
    return "accepted", None
