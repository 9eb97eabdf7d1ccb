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

from training.synth import listing
from training.synth.backgrounds import Backgrounds
from training.synth.objects import pick_kind, render_object
from training.synth.split import Split, select

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


def load_cutouts(folders: Sequence[Path], split: Split | None = None) -> list[Path]:
    """RGBA cutout files whose alpha is really used (others are skipped), on `split`'s side of
    the train/dev split when one is given (near-duplicates judged across all the folders)."""
    usable = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.suffix.lower() not in CUTOUT_SUFFIXES:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is not None and has_real_alpha(image):
                usable.append(path)
    return select(usable, split)


def cutout_kinds(paths: Sequence[Path]) -> dict[Path, str]:
    """The kind of each cutout (ring, earring, necklace...) from a `MANIFEST.tsv` (columns
    `file` and `kind`, `file` matched by stem) in its folder or the one above; "cutout" when
    none says."""
    tables: dict[Path, dict[str, str]] = {}
    kinds = {}
    for path in paths:
        folder = path.parent
        if folder not in tables:
            tables[folder] = read_kind_table(folder)
        kinds[path] = tables[folder].get(path.stem, "cutout")
    return kinds


def read_kind_table(folder: Path) -> dict[str, str]:
    for candidate in (folder / "MANIFEST.tsv", folder.parent / "MANIFEST.tsv"):
        if candidate.exists():
            rows = [line.split("\t") for line in candidate.read_text().splitlines()]
            if not rows or "file" not in rows[0] or "kind" not in rows[0]:
                continue
            file_at, kind_at = rows[0].index("file"), rows[0].index("kind")
            return {Path(row[file_at]).stem: row[kind_at] for row in rows[1:] if len(row) > kind_at}
    return {}


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
    the share with a soft shadow; `degrade=False` skips the photo degradations (for tests);
    `listing_styles=False` draws as before the styles existed (no listing.STYLES, the six
    classic kinds), so sets defined then are drawn again pixel for pixel."""

    def __init__(
        self,
        backgrounds: Backgrounds | None = None,
        cutouts: Sequence[Path] = (),
        cutout_share: float = 0.5,
        object_size: int = 384,
        shadow_share: float = 0.7,
        degrade: bool = True,
        listing_styles: bool = True,
    ) -> None:
        self.backgrounds = backgrounds or Backgrounds(use_skimage=False)
        self.cutouts = list(cutouts)
        self.cutout_kinds = cutout_kinds(self.cutouts)
        self.cutout_share = cutout_share
        self.object_size = object_size
        self.shadow_share = shadow_share
        self.degrade = degrade
        self.listing_styles = listing_styles

    def object(self, rng: np.random.Generator, kind: str | None) -> tuple[np.ndarray, str, str]:
        """(RGBA, kind, source): a checked cutout file or a procedural piece."""
        if kind is None and self.cutouts and rng.random() < self.cutout_share:
            path = self.cutouts[int(rng.integers(len(self.cutouts)))]
            return read_cutout(path), self.cutout_kinds[path], path.name
        kind = kind or pick_kind(rng, classic=not self.listing_styles)
        return render_object(rng, kind, self.object_size), kind, "procedural"

    def sample(
        self,
        rng: np.random.Generator,
        height: int,
        width: int,
        kind: str | None = None,
        style: str | None = None,
    ) -> Sample:
        """One composite; `style` (a name in listing.STYLES) forces that style alone."""
        styles = listing.pick_styles(rng, style) if self.listing_styles or style else set()
        layer, kinds, sources = self.pieces(rng, height, width, kind, styles)
        alpha = np.clip(layer[..., 3], 0, 1)
        background, background_kind = self.background(rng, height, width, styles)
        if rng.random() < self.shadow_share:
            background = add_shadow(rng, background, alpha)
        scene = layer[..., :3] + background * (1 - alpha[..., None])
        if "fingers" in styles:
            fingers = listing.finger_layer(rng, height, width, alpha)
            scene = fingers[..., :3] + scene * (1 - fingers[..., 3:4])
            alpha = alpha * (1 - fingers[..., 3])  # what of the piece is still seen
        image, effects = self.photograph(rng, scene, styles)
        mask = alpha > 0.5
        info = {
            "kind": kinds[0] if len(set(kinds)) == 1 else "set",
            "source": sources[0] if len(sources) == 1 else ",".join(sources),
            "background": background_kind,
            "styles": sorted(styles),
            "coverage": round(float(mask.mean()), 5),
            **effects,
        }
        return Sample(image, mask, alpha, info)

    def background_only(self, rng: np.random.Generator, height: int, width: int) -> Sample:
        """A frame with no jewellery (a listing-style background, degraded alike), empty mask."""
        styles = listing.pick_styles(rng) if self.listing_styles else set()
        background, background_kind = self.background(rng, height, width, styles)
        image, effects = self.photograph(rng, background, styles)
        empty = np.zeros((height, width), bool)
        info = {
            "kind": "none",
            "source": "none",
            "background": background_kind,
            "coverage": 0.0,
            **effects,
        }
        return Sample(image, empty, empty.astype(np.float32), info)

    def photograph(
        self, rng: np.random.Generator, scene: np.ndarray, styles: set[str]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The scene (float RGB) as a camera gives it: the phone look when that style is on,
        then the degradations (unless `degrade=False`); uint8 and what was done."""
        effects: dict[str, Any] = {}
        if "phone" in styles:
            scene, effects = listing.phone_look(rng, scene)
        if not self.degrade:
            return (np.clip(scene, 0, 1) * 255 + 0.5).astype(np.uint8), effects
        image, degradations = degrade(rng, scene)
        return image, {**effects, **degradations}

    def pieces(
        self,
        rng: np.random.Generator,
        height: int,
        width: int,
        kind: str | None,
        styles: set[str],
    ) -> tuple[np.ndarray, list[str], list[str]]:
        """The pieces on one frame-sized premultiplied layer, with their kinds and sources."""
        count = int(rng.integers(2, 4)) if "set" in styles else 1
        layer = np.zeros((height, width, 4), np.float32)
        kinds, sources = [], []
        rgba, piece_kind, source = self.object(rng, kind)
        for index in range(count):
            if index and rng.random() < 0.5:  # the next piece of a pair: the same, mirrored
                rgba = rgba[:, ::-1]
            elif index:
                rgba, piece_kind, source = self.object(rng, kind)
            if "recolour" in styles and source != "procedural":
                rgba = listing.recolour_metal(rng, rgba)
            obj = (
                rotate_rgba(rgba, rng.uniform(-180, 180))
                if rng.random() < 0.8
                else _premultiply(rgba)
            )
            if "perspective" in styles:
                obj = listing.warp_perspective(rng, obj)
            if rng.random() < 0.5:
                obj = obj[:, ::-1]
            if index == 0:
                close = "closeup" in styles
                coverage = listing.closeup_coverage(rng) if close else coverage_target(rng)
            share = coverage / count * (rng.uniform(0.7, 1.3) if count > 1 else 1.0)
            piece = place(rng, scale_to_coverage(obj, share, height, width), height, width)
            layer = listing.over(piece, layer)
            kinds.append(piece_kind)
            sources.append(source)
        return layer, kinds, sources

    def background(
        self, rng: np.random.Generator, height: int, width: int, styles: set[str]
    ) -> tuple[np.ndarray, str]:
        chosen = sorted(styles & set(listing.BACKGROUND_STYLES))
        return self.backgrounds.draw(rng, height, width, chosen[0] if chosen else None)
