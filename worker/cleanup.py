"""Mask cleanup as in the study: drop isolated specks and thin lines, keep thin parts of objects.

A plain morphological opening would also erase a thin chain hanging from a pendant, so the
opening only decides which connected components are real ("opening by reconstruction"): a
component is kept whole, thin parts included, when something of it survives the opening, or
when it is large on its own (a chain photographed without a pendant). Components are traced
with hysteresis and a small gap tolerance: pixels at or above `link_threshold`, widened by
`link_gap`, connect foreground pieces, so a chain whose thinnest links fall under 0.5 (or
vanish) at network resolution stays attached to its pendant instead of breaking into fragments
that look like specks. Only pixels at or above `threshold` are ever in the mask. Sizes are
relative to the image, so the rules hold at any network resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CleanupParams:
    threshold: float = 0.5  # probability at or above which a pixel is foreground
    link_threshold: float = 0.2  # weaker pixels that still connect foreground pieces
    link_gap: float = 0.02  # of the shorter side: pieces this close belong together
    opening_radius: float = 0.006  # of the shorter side; at least 1 pixel
    min_core_area: float = 0.0005  # of the image: a component's part that survives the opening
    keep_large_area: float = 0.01  # of the image: a component this large is kept even if thin
    max_hole_area: float = 0.0005  # of the image: smaller holes inside the object are filled


DEFAULT_CLEANUP = CleanupParams()


def clean_mask(probability: np.ndarray, params: CleanupParams = DEFAULT_CLEANUP) -> np.ndarray:
    """Threshold a probability map (H, W) and clean it; returns a bool mask of the same shape."""
    if probability.ndim != 2:
        raise ValueError(f"expected a 2-D probability map, got shape {probability.shape}")
    binary = (probability >= params.threshold).astype(np.uint8)
    if not binary.any():
        return binary.astype(bool)
    linked = (probability >= min(params.link_threshold, params.threshold)).astype(np.uint8)
    linked = cv2.dilate(linked, _disc(params.link_gap * min(binary.shape) / 2))
    kept = _keep_real_components(binary, linked, params)
    return _fill_small_holes(kept, int(params.max_hole_area * binary.size))


def opening_kernel(shape: tuple[int, int], params: CleanupParams = DEFAULT_CLEANUP) -> np.ndarray:
    return _disc(params.opening_radius * min(shape))


def _disc(radius: float) -> np.ndarray:
    size = 2 * max(1, round(radius)) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _keep_real_components(
    binary: np.ndarray, linked: np.ndarray, params: CleanupParams
) -> np.ndarray:
    count, labels = cv2.connectedComponents(linked, connectivity=8)
    foreground = binary.astype(bool)
    areas = np.bincount(labels[foreground], minlength=count)
    opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, opening_kernel(binary.shape, params))
    core_areas = np.bincount(labels[opened.astype(bool)], minlength=count)
    image_area = binary.size
    keep = (core_areas >= max(1, params.min_core_area * image_area)) | (
        areas >= params.keep_large_area * image_area
    )
    keep[0] = False  # label 0 is the background
    if keep[1:].all():  # the common case: every foreground pixel is in a kept component
        return foreground
    return foreground & keep[labels]


def _fill_small_holes(mask: np.ndarray, max_hole_area: int) -> np.ndarray:
    if max_hole_area < 1:
        return mask
    # Holes: background that does not reach the border (4-connected). A flood fill from a
    # one-pixel frame finds the background that does; only what is left gets labelled, which
    # is a fraction of the cost of labelling all the background.
    height, width = mask.shape
    outside = np.zeros((height + 2, width + 2), np.uint8)
    outside[1:-1, 1:-1] = mask
    cv2.floodFill(outside, None, (0, 0), 1, flags=4)
    holes = (outside[1:-1, 1:-1] == 0).view(np.uint8)
    if not holes.any():
        return mask
    _, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
    filled = mask.copy()
    for label in np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= max_hole_area) + 1:
        x, y, w, h = stats[label, :4]  # within its box: a few small holes, not the whole image
        box = np.s_[y : y + h, x : x + w]
        filled[box] |= labels[box] == label
    return filled
