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
    weak = (probability >= min(params.link_threshold, params.threshold)).view(np.uint8)
    mask = np.zeros(probability.shape, bool)
    box = _working_box(weak, probability.shape, params)
    if box is None:
        return mask
    binary = (probability[box] >= params.threshold).view(np.uint8)
    if not binary.any():
        return mask
    linked = cv2.dilate(weak[box], _disc(_link_radius(probability.shape, params)))
    kept = _keep_real_components(binary, linked, probability.shape, params)
    mask[box] = _fill_small_holes(kept, int(params.max_hole_area * probability.size))
    return mask


def _working_box(
    weak: np.ndarray, shape: tuple[int, int], params: CleanupParams
) -> tuple[slice, slice] | None:
    """The part of the image that cleanup needs: the weak pixels' box, widened by the link
    gap and the opening radius. Everything outside it is background that reaches the border,
    so cleaning the box alone gives the same mask at a fraction of the cost (the pieces
    usually cover a small part of the photo)."""
    x, y, width, height = cv2.boundingRect(weak)
    if width == 0:
        return None
    margin = round(_link_radius(shape, params)) + round(params.opening_radius * min(shape)) + 2
    return (
        slice(max(0, y - margin), min(shape[0], y + height + margin)),
        slice(max(0, x - margin), min(shape[1], x + width + margin)),
    )


def _link_radius(shape: tuple[int, int], params: CleanupParams) -> float:
    return params.link_gap * min(shape) / 2


def opening_kernel(shape: tuple[int, int], params: CleanupParams = DEFAULT_CLEANUP) -> np.ndarray:
    return _disc(params.opening_radius * min(shape))


def _disc(radius: float) -> np.ndarray:
    size = 2 * max(1, round(radius)) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _keep_real_components(
    binary: np.ndarray, linked: np.ndarray, shape: tuple[int, int], params: CleanupParams
) -> np.ndarray:
    """`binary` and `linked`: a box of an image of `shape` (sizes are relative to the image)."""
    count, labels = cv2.connectedComponents(linked, connectivity=8)
    foreground = binary.view(bool)
    opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, opening_kernel(shape, params))
    if count == 2:  # one component, as in most photos: counted without the labels
        areas = np.array([0, cv2.countNonZero(binary)])
        core_areas = np.array([0, cv2.countNonZero(opened)])
    else:
        areas = np.bincount(labels[foreground], minlength=count)
        core_areas = np.bincount(labels[opened.view(bool)], minlength=count)
    image_area = shape[0] * shape[1]
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
    x0, y0, holes_width, holes_height = cv2.boundingRect(holes)
    if holes_width == 0:
        return mask
    # Labelled within the holes' box, which is a fraction of the image; sized by a count
    # over the box, not by OpenCV's statistics (they cost more than the labelling).
    around = np.s_[y0 : y0 + holes_height, x0 : x0 + holes_width]
    count, labels = cv2.connectedComponents(holes[around], connectivity=4)
    small = np.bincount(labels.ravel(), minlength=count) <= max_hole_area
    small[0] = False  # label 0: the mask and the background that reaches the border
    filled = mask.copy()
    filled[around] |= small[labels]
    return filled
