"""Composites: an RGBA object (procedural or from a cutout folder) placed, rotated and scaled on
a background with a soft shadow, then degraded like a phone photo (blur, noise, colour jitter,
JPEG). The ground-truth mask is the placed object's alpha > 0.5."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.synth.backgrounds import Backgrounds
from training.synth.objects import pick_kind, render_object

CUTOUT_SUFFIXES = {".png", ".webp"}


@dataclass
class Sample:
    rgb: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray  # H x W bool: alpha > 0.5
    alpha: np.ndarray  # H x W float32 0..1, the object's coverage (a soft matte)
    info: dict[str, Any] = field(default_factory=dict)


def coverage_target(rng: np.random.Generator) -> float:
    """The share of the frame the object's mask should cover: mostly 3%..60% (log-uniform),
    sometimes tiny or huge, as in listing photos."""
    draw = rng.random()
    if draw < 0.08:
        low, high = 0.004, 0.03
    elif draw < 0.93:
        low, high = 0.03, 0.6
    else:
        low, high = 0.6, 0.85
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def has_real_alpha(rgba: np.ndarray) -> bool:
    """Many "RGBA" PNGs are fully opaque: require both a transparent and an opaque part."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        return False
    alpha = rgba[..., 3]
    return float((alpha < 16).mean()) > 0.02 and float((alpha > 240).mean()) > 0.02


def load_cutouts(folders: Sequence[Path]) -> list[Path]:
    """RGBA cutout files whose alpha is really used (others are reported and skipped)."""
    usable = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix.lower() not in CUTOUT_SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is not None and has_real_alpha(image):
                usable.append(path)
    return usable


def read_cutout(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    rgba = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    if image.dtype != np.uint8:
        rgba = (rgba / 257).astype(np.uint8)
    return rgba


def rotate_rgba(rgba: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate premultiplied RGBA (no dark fringe), growing the canvas to keep the corners."""
    height, width = rgba.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(height * sin + width * cos) + 2, int(height * cos + width * sin) + 2
    matrix[0, 2] += new_w / 2 - width / 2
    matrix[1, 2] += new_h / 2 - height / 2
    premultiplied = _premultiply(rgba)
    rotated = cv2.warpAffine(premultiplied, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR)
    return rotated


def _premultiply(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA -> float premultiplied RGBA in 0..1."""
    values = rgba.astype(np.float32) / 255
    values[..., :3] *= values[..., 3:]
    return values


def scale_to_coverage(
    premultiplied: np.ndarray, coverage: float, height: int, width: int
) -> np.ndarray:
    """Resize so alpha covers `coverage` of the frame, but never beyond 1.15x the frame."""
    area = max(float(premultiplied[..., 3].sum()), 1.0)
    scale = np.sqrt(coverage * height * width / area)
    oh, ow = premultiplied.shape[:2]
    scale = min(scale, 1.15 * height / oh, 1.15 * width / ow)
    size = (max(round(float(ow * scale)), 1), max(round(float(oh * scale)), 1))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(premultiplied, size, interpolation=interpolation)


def place(
    rng: np.random.Generator, premultiplied: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Put the object on a frame-sized layer, fairly centred; a big one may be cut by the edge."""
    layer = np.zeros((height, width, 4), np.float32)
    oh, ow = premultiplied.shape[:2]
    spread = 0.25 if rng.random() < 0.8 else 0.5
    cy = height / 2 + rng.uniform(-spread, spread) * max(height - oh, 0)
    cx = width / 2 + rng.uniform(-spread, spread) * max(width - ow, 0)
    top, left = round(float(cy - oh / 2)), round(float(cx - ow / 2))
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + oh, height), min(left + ow, width)
    if y1 > y0 and x1 > x0:
        layer[y0:y1, x0:x1] = premultiplied[y0 - top : y1 - top, x0 - left : x1 - left]
    return layer


def add_shadow(rng: np.random.Generator, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """A soft drop shadow under the object: darkens the background, never part of the mask."""
    side = max(alpha.shape)
    shift = rng.normal(0, 0.015, 2) * side
    matrix = np.float32([[1, 0, shift[0]], [0, 1, abs(shift[1]) + side * 0.005]])
    shadow = cv2.warpAffine(alpha, matrix, (alpha.shape[1], alpha.shape[0]))
    shadow = cv2.GaussianBlur(shadow, (0, 0), side * rng.uniform(0.004, 0.02))
    return background * (1 - rng.uniform(0.15, 0.55) * shadow[..., None])


def degrade(rng: np.random.Generator, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Colour jitter, blur, noise and JPEG artefacts, as on a phone photo. float in, uint8 out."""
    info: dict[str, Any] = {}
    gain = (
        rng.uniform(0.8, 1.2, 3).astype(np.float32)
        if rng.random() < 0.6
        else np.ones(3, np.float32)
    )
    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.uniform(-0.08, 0.08)
    mean = rgb.mean()
    rgb = (rgb - mean) * contrast + mean + brightness
    rgb = rgb * gain
    if rng.random() < 0.5:
        grey = rgb.mean(axis=2, keepdims=True)
        rgb = grey + (rgb - grey) * rng.uniform(0.6, 1.3)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.4, 1.4)
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigma)
        info["blur"] = round(float(sigma), 2)
    if rng.random() < 0.5:
        rgb = rgb + rng.normal(0, rng.uniform(0.005, 0.03), rgb.shape).astype(np.float32)
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.7:
        quality = int(rng.integers(35, 96))
        _, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
        info["jpeg"] = quality
    return np.ascontiguousarray(image), info


class Compositor:
    """Makes listing-like samples. `cutouts` are RGBA files (checked with has_real_alpha);
    `cutout_share` is the share of samples that use them when there are any; `shadow_share`
    the share with a soft shadow; `degrade=False` skips the photo degradations (for tests)."""

    def __init__(
        self,
        backgrounds: Backgrounds | None = None,
        cutouts: Sequence[Path] = (),
        cutout_share: float = 0.5,
        object_size: int = 384,
        shadow_share: float = 0.7,
        degrade: bool = True,
    ) -> None:
        self.backgrounds = backgrounds or Backgrounds(use_skimage=False)
        self.cutouts = list(cutouts)
        self.cutout_share = cutout_share
        self.object_size = object_size
        self.shadow_share = shadow_share
        self.degrade = degrade

    def object(self, rng: np.random.Generator, kind: str | None) -> tuple[np.ndarray, str, str]:
        """(RGBA, kind, source): a checked cutout file or a procedural piece."""
        if kind is None and self.cutouts and rng.random() < self.cutout_share:
            path = self.cutouts[int(rng.integers(len(self.cutouts)))]
            return read_cutout(path), "cutout", path.name
        kind = kind or pick_kind(rng)
        return render_object(rng, kind, self.object_size), kind, "procedural"

    def sample(
        self, rng: np.random.Generator, height: int, width: int, kind: str | None = None
    ) -> Sample:
        rgba, kind, source = self.object(rng, kind)
        obj = (
            rotate_rgba(rgba, rng.uniform(-180, 180)) if rng.random() < 0.8 else _premultiply(rgba)
        )
        if rng.random() < 0.5:
            obj = obj[:, ::-1]
        coverage = coverage_target(rng)
        layer = place(rng, scale_to_coverage(obj, coverage, height, width), height, width)
        alpha = np.clip(layer[..., 3], 0, 1)
        background, background_kind = self.backgrounds.draw(rng, height, width)
        if rng.random() < self.shadow_share:
            background = add_shadow(rng, background, alpha)
        rgb = layer[..., :3] + background * (1 - alpha[..., None])
        if self.degrade:
            image, degradations = degrade(rng, rgb)
        else:
            image, degradations = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), {}
        mask = alpha > 0.5
        info = {
            "kind": kind,
            "source": source,
            "background": background_kind,
            "coverage": round(float(mask.mean()), 5),
            **degradations,
        }
        return Sample(image, mask, alpha, info)
