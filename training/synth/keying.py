"""Product photos on plain white into cutouts: key on the background colour, refine the edge,
and keep only masks that are clearly right.

The background is modelled as a smooth field (a quadratic surface per Lab channel fitted to
the pixels that look like it), so a grey sweep or a vignette is background too. A pixel is
object when its colour differs from that field (chroma), when it is much darker, or when it is
somewhat darker and textured: soft shadows and reflections are smooth darkening, metal and
stones have edges. Near-white parts of a piece (white metal, pearls, diamonds) make holes in
that mask: an enclosed hole is kept only when it is large, smooth and the exact background
colour (the inside of a ring), and filled otherwise. The edge is then refined with a guided
band: there alpha is the pixel's colour distance from the backdrop over that of the piece
next to it, which gives a soft alpha along the outline.

`key_product` returns the cutout with checks; `KeyedProduct.doubtful` says why a mask is not to
be trusted (the mask moves with the threshold, the background is not plain, the piece touches
the frame, the mask is empty or fills the photo).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from training.synth.backgrounds import shrink

MAX_SIDE = 800
CHROMA_OBJECT = 9.0  # Lab a/b distance from the background field
DARK_OBJECT = 38.0  # L darker than the field, whatever the texture
DARK_TEXTURED = 9.0  # L darker than the field where the photo has local detail
TEXTURE = 2.0  # local detail (see local_detail) that marks an object
MIN_STABILITY = 0.92  # masks at a stricter and a looser threshold: share of the area that
# stays put away from the outline
MAX_BACKGROUND_NOISE = 3.0  # L std of the background pixels around the field
MIN_AREA, MAX_AREA = 0.004, 0.85
MIN_PIECE_CONTRAST = 12.0  # Lab distance taken for a piece's colour when it is nearer white
WEAK_EDGE = 12.0  # Sobel magnitude of L (smoothed, per pixel x 8) an outline pixel needs
MAX_WEAK_OUTLINE = 0.12  # share of the outline allowed without such an edge


@dataclass
class KeyedProduct:
    rgba: np.ndarray  # H x W x 4 uint8, colour decontaminated from the background
    mask: np.ndarray  # H x W bool, alpha > 0.5
    photo: np.ndarray  # H x W x 3 uint8 RGB, the photo as keyed (flattened on white, shrunk)
    checks: dict[str, float] = field(default_factory=dict)
    doubtful: list[str] = field(default_factory=list)


def fit_field(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A quadratic surface in (x, y) fitted to `values` where `weights` is set; same shape."""
    height, width = values.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = x / width - 0.5, y / height - 0.5
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)
    chosen = weights.ravel()
    step = max(1, int(chosen.sum()) // 20000)  # a subsample is plenty for six coefficients
    rows = np.flatnonzero(chosen)[::step]
    if rows.size < 50:
        return np.full_like(values, np.median(values))
    coefficients, *_ = np.linalg.lstsq(basis.reshape(-1, 6)[rows], values.ravel()[rows], rcond=None)
    return (basis @ coefficients.astype(np.float32)).astype(np.float32)


def background_field(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The background's Lab field and the pixels used to fit it (near the border colour)."""
    border = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
    reference = np.median(border, axis=0)
    candidates = np.linalg.norm(lab - reference, axis=-1) < 12
    fitted = np.dstack([fit_field(lab[..., c], candidates) for c in range(3)])
    for _ in range(2):  # refit on what now looks like background
        candidates = np.linalg.norm(lab - fitted, axis=-1) < 5
        fitted = np.dstack([fit_field(lab[..., c], candidates) for c in range(3)])
    return fitted, candidates


def local_detail(lightness: np.ndarray) -> np.ndarray:
    """Fine structure: the magnitude of the Laplacian of Gaussian (sigma 1 px).
    A soft shadow is a smooth ramp, whose second derivative is small however dark it
    gets; engraving, facets and a piece's outline are sharp."""
    smooth = cv2.GaussianBlur(lightness, (0, 0), 1.0)
    return np.abs(cv2.Laplacian(smooth, cv2.CV_32F))


def object_mask(
    chroma: np.ndarray, dark: np.ndarray, detail: np.ndarray, scale: float
) -> np.ndarray:
    """Pixels keyed as object at thresholds times `scale` (higher: stricter)."""
    return (
        (chroma > CHROMA_OBJECT * scale)
        | (dark > DARK_OBJECT * scale)
        | ((dark > DARK_TEXTURED * scale) & (detail > TEXTURE * scale))
        | (detail > 4 * TEXTURE * scale)
    )


def fill_false_holes(mask: np.ndarray, plain: np.ndarray) -> np.ndarray:
    """Fill the holes of the mask that are not the backdrop seen through the piece.

    A hole is kept when most of its pixels are plain backdrop (`plain`: its colour, smooth; a
    shadow may fall there): 80% for a large hole (a ring's inside), half for a small one
    (between a chain's links, whose shadow and edges take the rest). A bright facet or a
    coloured highlight that keyed as backdrop is rarely that uniform, and is filled."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), 4)
    height, width = mask.shape
    filled = mask.copy()
    large = max(0.03 * float(mask.sum()), 30.0)  # a ring's hole is a fair share of the ring
    for label in range(1, count):
        x, y, w, h, area = stats[label]
        if x == 0 or y == 0 or x + w == width or y + h == height:
            continue  # the surrounding background, not a hole
        hole = labels == label
        share = plain[hole].mean()
        if share < (0.8 if area >= large else 0.5):
            filled |= hole
    return filled


def refine_edge(mask: np.ndarray, distance: np.ndarray, band: int = 2) -> np.ndarray:
    """Soft alpha along the outline only: inside the mask eroded by `band` px it is 1 (a
    diamond's bright facets are no less opaque), beyond the dilated mask 0, and in between
    the pixel's colour distance from the backdrop over that of the piece next to it (a pixel
    half covered by the piece is half way between their colours)."""
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    inside = cv2.erode(mask.astype(np.uint8), kernel) > 0
    outside = cv2.dilate(mask.astype(np.uint8), kernel) == 0
    reach = np.ones((4 * band + 3, 4 * band + 3), np.uint8)
    piece = cv2.dilate(np.where(inside, distance, 0).astype(np.float32), reach)
    alpha = np.clip(distance / np.maximum(piece, MIN_PIECE_CONTRAST), 0, 1)
    alpha[alpha < 0.04] = 0
    alpha[inside], alpha[outside] = 1.0, 0.0
    return alpha


def decontaminate(rgb: np.ndarray, alpha: np.ndarray, background_rgb: np.ndarray) -> np.ndarray:
    """The object's own colour where alpha is partial: (I - (1 - a) B) / a."""
    a = np.maximum(alpha, 1e-3)[..., None]
    colour = (rgb - (1 - alpha[..., None]) * background_rgb) / a
    return np.where(alpha[..., None] > 0.98, rgb, np.clip(colour, 0, 1))


def key_product(bgr: np.ndarray, frame_cut_allowed: bool = False) -> KeyedProduct:
    """Key one product photo (BGR or BGRA uint8) shot on plain white or light grey."""
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    if bgr.shape[2] == 4:  # a PNG with alpha: flatten on white, as the shop showed it
        alpha = bgr[..., 3:].astype(np.float32) / 255
        bgr = (bgr[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    bgr = shrink(bgr, MAX_SIDE)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    fitted, fit_pixels = background_field(lab)
    chroma = np.linalg.norm(lab[..., 1:] - fitted[..., 1:], axis=-1)
    dark = fitted[..., 0] - lab[..., 0]
    detail = local_detail(lab[..., 0] - fitted[..., 0])
    masks = {s: object_mask(chroma, dark, detail, s) for s in (0.75, 1.0, 1.35)}
    # Background seen through a hole is the backdrop's colour and smooth (a shadow may fall
    # there); a flat highlight on a piece is rarely as large.
    smooth_background = (chroma < 4) & (detail < TEXTURE * 0.5) & (dark > -3)
    hard = {s: fill_false_holes(clean_specks(m), smooth_background) for s, m in masks.items()}
    alpha = refine_edge(hard[1.0], np.linalg.norm(lab - fitted, axis=-1))
    background_rgb = cv2.cvtColor(fitted, cv2.COLOR_LAB2RGB)
    colour = decontaminate(rgb, alpha, background_rgb)
    rgba = np.dstack([colour, alpha])
    rgba = (rgba * 255 + 0.5).astype(np.uint8)
    mask = alpha > 0.5
    checks = measure(hard, mask, lab, fitted, fit_pixels)
    checks["weak_outline"] = round(weak_outline_share(mask, lab[..., 0]), 4)
    photo = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return KeyedProduct(rgba, mask, photo, checks, judge(checks, frame_cut_allowed))


def clean_specks(mask: np.ndarray) -> np.ndarray:
    """Drop object specks (JPEG noise, dust) far smaller than the piece."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    if count <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= max(12, 0.002 * areas.max())) + 1
    return np.isin(labels, keep)


def measure(
    hard: dict[float, np.ndarray],
    mask: np.ndarray,
    lab: np.ndarray,
    fitted: np.ndarray,
    fit_pixels: np.ndarray,
) -> dict[str, float]:
    loose, strict = hard[0.75], hard[1.35]
    kernel = np.ones((5, 5), np.uint8)
    edge = cv2.dilate(hard[1.0].astype(np.uint8), kernel) > cv2.erode(
        hard[1.0].astype(np.uint8), kernel
    )
    moved = (loose != strict) & ~edge  # outline jitter within 2 px is the matte's business
    stability = 1 - float(moved.sum()) / max(float(hard[1.0].sum()), 1.0)
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    residual = (lab[..., 0] - fitted[..., 0])[fit_pixels & ~mask]
    return {
        "area": round(float(mask.mean()), 4),
        "stability": round(stability, 4),
        "border_object_share": round(float(border.mean()), 4),
        "background_noise": round(float(residual.std()) if residual.size else 99.0, 3),
        "components": float(significant_parts(mask)),
    }


def weak_outline_share(mask: np.ndarray, lightness: np.ndarray) -> float:
    """The share of the mask's outline where the photo has no edge: there the key guessed
    (a white highlight running into the white backdrop), and the cutout may be cut short."""
    outline = mask & ~(cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if not outline.any():
        return 1.0
    smooth = cv2.GaussianBlur(lightness, (0, 0), 1.0)
    gradient = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    support = cv2.dilate(gradient, np.ones((3, 3), np.uint8))  # the edge may sit a pixel off
    return float((support[outline] < WEAK_EDGE).mean())


def significant_parts(mask: np.ndarray) -> int:
    """Connected parts of at least 1% of the largest: a pair of earrings is 2, a chain keyed
    in broken pieces many."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    areas = stats[1:count, cv2.CC_STAT_AREA]
    return int((areas >= 0.01 * areas.max()).sum()) if areas.size else 0


def judge(checks: dict[str, float], frame_cut_allowed: bool) -> list[str]:
    reasons = []
    if not MIN_AREA <= checks["area"] <= MAX_AREA:
        reasons.append("area")
    if checks["stability"] < MIN_STABILITY:
        reasons.append("unstable")
    if checks["background_noise"] > MAX_BACKGROUND_NOISE:
        reasons.append("background_not_plain")
    if checks["border_object_share"] > (0.12 if frame_cut_allowed else 0.005):
        reasons.append("touches_frame")
    if checks["weak_outline"] > MAX_WEAK_OUTLINE:
        reasons.append("weak_outline")
    if checks["components"] > 8:
        reasons.append("fragmented")
    return reasons
