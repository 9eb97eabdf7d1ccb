"""Reviewed precision and the gate it supports: Wilson intervals and the calibration rule.

Pure functions over verdict counts, so the rule is testable by hand. A reviewed image counts at
threshold t when a gate at t would accept it (confidence >= t; the area bounds stay the card's):
precision(t) = clean / reviewed among those. The calibrated gate is the lowest t whose Wilson
lower bound on precision(t) meets the target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959964  # two-sided 95%
MAX_EXTRA_REVIEWS = 1_000_000


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def wilson_interval(clean: int, reviewed: int, z: float = Z95) -> Interval:
    """Wilson's score interval for clean / reviewed."""
    if reviewed <= 0:
        raise ValueError("no reviews: no interval")
    p = clean / reviewed
    z2 = z * z
    centre = p + z2 / (2 * reviewed)
    spread = z * math.sqrt(p * (1 - p) / reviewed + z2 / (4 * reviewed * reviewed))
    scale = 1 + z2 / reviewed
    return Interval(p, (centre - spread) / scale, (centre + spread) / scale)


@dataclass(frozen=True)
class Candidate:
    """Precision if the gate were at `threshold`: over the reviewed images it would accept."""

    threshold: float
    reviewed: int
    clean: int
    interval: Interval


@dataclass(frozen=True)
class Calibration:
    target: float
    chosen: Candidate | None  # None: no threshold meets the target yet
    candidates: list[Candidate]  # highest threshold first
    # The next lower threshold whose observed precision meets the target, and how many more
    # reviews at or above it (as clean as so far) its lower bound needs to meet it too.
    next_lower: Candidate | None
    reviews_for_next_lower: int | None


def candidates(verdicts: Sequence[tuple[float, bool]], z: float = Z95) -> list[Candidate]:
    """(confidence, clean) of reviewed images the area bounds let through -> one candidate per
    distinct confidence, highest first, each over the images at or above it."""
    ordered = sorted(verdicts, key=lambda item: item[0], reverse=True)
    result: list[Candidate] = []
    reviewed = clean = 0
    for index, (confidence, is_clean) in enumerate(ordered):
        reviewed += 1
        clean += bool(is_clean)
        if index + 1 < len(ordered) and ordered[index + 1][0] == confidence:
            continue  # ties: a threshold takes them all
        result.append(Candidate(confidence, reviewed, clean, wilson_interval(clean, reviewed, z)))
    return result


def calibrate(verdicts: Sequence[tuple[float, bool]], target: float, z: float = Z95) -> Calibration:
    found = candidates(verdicts, z)
    meeting = [c for c in found if c.interval.low >= target]
    chosen = min(meeting, key=lambda c: c.threshold) if meeting else None
    below = [c for c in found if chosen is None or c.threshold < chosen.threshold]
    promising = [c for c in below if c.interval.estimate >= target and c.interval.low < target]
    next_lower = min(promising, key=lambda c: c.threshold) if promising else None
    extra = None if next_lower is None else reviews_needed(next_lower, target, z)
    return Calibration(target, chosen, found, next_lower, extra)


def reviews_needed(candidate: Candidate, target: float, z: float = Z95) -> int | None:
    """More reviews (with the candidate's clean share) for its Wilson lower bound to reach the
    target; None when the share itself is below the target or it would take absurdly many."""
    share = candidate.clean / candidate.reviewed
    if share < target:
        return None

    def meets(extra: int) -> bool:
        total = candidate.reviewed + extra
        return wilson_interval(round(share * total), total, z).low >= target

    if meets(0):
        return 0
    high = 1
    while not meets(high):
        high *= 2
        if high > MAX_EXTRA_REVIEWS:
            return None
    low = high // 2  # meets(low) is False, meets(high) True
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if meets(middle) else (middle, high)
    return high
